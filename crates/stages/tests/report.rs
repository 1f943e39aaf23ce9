//! Tests of the report stage, run through the engine like `vaepipe run`.
//!
//! - Against the artifact contract (docs/artifacts.md): stand-in upstream stages write small
//!   synthetic artifacts whose numbers are known, so the tests can check where each number lands
//!   (results table, the Burda et al. Table 1 layout), how many-point sweeps, failed points and
//!   unreadable files are handled.
//!
//! The real pipeline's tests are in report_real.rs, the helpers in report/support.rs.

#[path = "report/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::*;

// ---------------------------------------------------------------------------------------------
// Contract tests (stand-in upstream stages)

#[test]
fn numbers_land_in_their_cells_and_every_figure_is_drawn() {
    let (tmp, store) = temp_store();
    let registry = fake_registry(FakeEval::default());
    let spec = load(&spec_text(
        "contract",
        r#""train.objective" = ["elbo", "iwae"]
"train.k" = [1, 5]"#,
        3,
    ));
    let report = run(&registry, &store, &spec, &[]);
    let dir = report_dir(&report);
    let stems = check_report(&dir);

    let mut expected: BTreeSet<String> = SUMMARY_FIGURES.iter().map(|s| s.to_string()).collect();
    for p in 0..4 {
        expected.extend([
            format!("samples_p{p}_standard"),
            format!("samples_p{p}_refit"),
            // Both variants share the trained model: one reconstruction and latent figure each.
            format!("reconstructions_p{p}_standard"),
            format!("latents_p{p}_standard"),
            format!("prior_density_p{p}"),
        ]);
    }
    // One figure of the test NLL against each swept key.
    expected.extend([
        "test_nll_vs_train_k".to_string(),
        "test_nll_vs_train_objective".to_string(),
    ]);
    assert_eq!(stems, expected);

    let md = index_md(&dir);
    // Burda et al. layout: the cell at (objective, prior) × (k) holds that point's NLL.
    let k5 = md_column(&md, "k = 5");
    let k1 = md_column(&md, "k = 1");
    for (row, objective) in [("VAE (ELBO)", "elbo"), ("IWAE (L\\_k)", "iwae")] {
        for (prior, variant) in [("N(0, I)", "standard"), ("mog K=3", "refit")] {
            let rows = md_rows(&md, &[row, prior]);
            assert_eq!(rows.len(), 1, "one Table-1 row for {row} / {prior}:\n{md}");
            assert_eq!(
                rows[0][k1],
                format!("{:.2} ± 0.25", synthetic_nll(objective, 1, variant))
            );
            assert_eq!(
                rows[0][k5],
                format!("{:.2} ± 0.25", synthetic_nll(objective, 5, variant))
            );
        }
    }
    // The paper's values are there, marked as the paper's.
    let paper = md_rows(&md, &["IWAE (paper)", "1"]);
    assert_eq!(paper.len(), 1);
    assert_eq!(paper[0][2..], ["86.76", "85.54", "84.78"]);
    let paper = md_rows(&md, &["IWAE (paper)", "2"]);
    assert_eq!(paper[0][2..], ["85.33", "83.89", "82.90"]);
    // ... and beside our cells (one stochastic layer: the paper's one-layer numbers).
    let beside = md_column(&md, "paper, k = 5");
    assert_eq!(beside, k5 + 1);
    assert_eq!(md_rows(&md, &["VAE (ELBO)", "N(0, I)"])[0][beside], "86.47");
    assert_eq!(
        md_rows(&md, &["IWAE (L\\_k)", "mog K=3"])[0][beside],
        "85.54"
    );
    // The results table: one row per point and prior, with active units out of the latent size.
    let units = md_column(&md, "active units");
    let rows = md_rows(section(&md, "Results"), &["k=5 objective=iwae", "mog K=3"]);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0][2],
        format!("{:.2} ± 0.25", synthetic_nll("iwae", 5, "refit"))
    );
    assert_eq!(rows[0][units], "4/50");
    // Spec text is escaped in both documents.
    assert!(
        md.contains("Checks \\<b\\>escaping\\</b\\> \\& the layout."),
        "{md}"
    );
    let html = std::fs::read_to_string(dir.join("index.html")).expect("index.html");
    assert!(
        html.contains("Checks &lt;b&gt;escaping&lt;/b&gt; &amp; the layout.")
            && !html.contains("<b>")
    );
    // Every point's resolved spec is shown (a `[train]` table per point, with its k).
    assert_eq!(md.matches("\n[train]\n").count(), 4);
    assert_no_store_path(&md, tmp.path());
}

#[test]
fn large_sweeps_draw_images_for_one_representative_point() {
    let (_tmp, store) = temp_store();
    let registry = fake_registry(FakeEval::default());
    let spec = load(&spec_text(
        "many",
        r#""train.k" = [1, 2, 3, 4, 5, 6, 7, 8]
"train.objective" = ["iwae"]"#,
        1,
    ));
    let dir = report_dir(&run(&registry, &store, &spec, &[]));
    let stems = check_report(&dir);
    // The lowest NLL is at the largest k (index 7): only its image figures are drawn.
    let per_point: BTreeSet<&str> = stems
        .iter()
        .filter_map(|s| {
            s.split('_')
                .find(|p| p.starts_with('p') && p[1..].parse::<u32>().is_ok())
        })
        .collect();
    assert_eq!(per_point, BTreeSet::from(["p7"]), "{stems:?}");
    let md = index_md(&dir);
    assert!(
        md.contains("one representative run: k=8 objective=iwae"),
        "{md}"
    );
    // All eight runs are in the results table all the same (two priors each).
    let results = section(&md, "Results");
    assert_eq!(
        md_rows(results, &["k=3 objective=iwae", "N(0, I)"]).len(),
        1
    );
    assert_eq!(
        md_rows(results, &["k=3 objective=iwae", "mog K=3"]).len(),
        1
    );
    // Beyond six points, later specs are shown as differences from the first.
    assert!(
        md.contains("As k=1 objective=iwae except:") && md.contains("\ntrain.k = 8\n"),
        "{md}"
    );
}

#[test]
fn failed_points_and_unreadable_files_are_reported_and_rendering_is_stable() {
    let (tmp, store) = temp_store();
    let registry = fake_registry(FakeEval {
        fail: Some("k=5 objective=iwae"),
        corrupt: Some("k=1 objective=elbo"),
        ..FakeEval::default()
    });
    let spec = load(&spec_text(
        "broken",
        r#""train.objective" = ["elbo", "iwae"]
"train.k" = [1, 5]"#,
        2,
    ));
    let report = run(&registry, &store, &spec, &[]);
    assert_eq!(report.failed().count(), 1, "only the injected eval failure");
    let dir = report_dir(&report);
    check_report(&dir);
    let md = index_md(&dir);

    // The failure is listed with its reason and its log, relative to the store.
    let failures = after_heading(&md, "## Failed or skipped stages");
    let line = failures
        .lines()
        .find(|l| l.contains("k=5 objective=iwae"))
        .expect("the failed point is listed");
    assert!(
        line.starts_with("- eval for k=5 objective=iwae")
            && line.contains("failed: injected failure for the test"),
        "{line}"
    );
    assert!(line.contains("log: \\<store\\>/logs/eval/"), "{line}");
    // Its cells say so; the other points keep their numbers.
    let rows = md_rows(&md, &["IWAE (L\\_k)", "N(0, I)"]);
    assert_eq!(rows[0][md_column(&md, "k = 5")], "eval failed");
    assert_eq!(
        rows[0][md_column(&md, "k = 1")],
        format!("{:.2} ± 0.25", synthetic_nll("iwae", 1, "standard"))
    );
    // The corrupt file is a noted problem, named by store entry rather than absolute path.
    let problems = after_heading(&md, "## Problems");
    assert!(
        problems.contains("lk\\_curve.parquet") && problems.contains("eval/"),
        "{problems}"
    );
    assert_no_store_path(&md, tmp.path());

    // Rendering again (forced) gives the same bytes.
    let before = files(&dir);
    let again = run(&registry, &store, &spec, &["report"]);
    let dir2 = report_dir(&again);
    assert_eq!(dir2, dir, "same inputs, same key");
    assert_same_files(&before, &files(&dir2), "between two renders");
}

/// No validation split for k = 1 (NaN, as the train stage records it) nor for k = 5 (0, as
/// older train stages did).
fn no_validation(k: u64, _train: f64) -> f64 {
    if k == 1 { f64::NAN } else { 0.0 }
}

/// A validation split only for k = 5.
fn validation_for_k5(k: u64, train: f64) -> f64 {
    if k == 5 { train - 1.5 } else { f64::NAN }
}

/// The SVG of a figure, and the caption of its Markdown image.
fn figure(dir: &Path, stem: &str) -> (String, String) {
    let svg =
        std::fs::read_to_string(dir.join("figures").join(format!("{stem}.svg"))).expect("svg");
    let md = index_md(dir);
    let target = format!("](figures/{stem}.png)");
    let line = md
        .lines()
        .find(|l| l.contains(&target))
        .unwrap_or_else(|| panic!("no figure {stem} in index.md"));
    (svg, line.to_string())
}

/// Renders the report of `spec` with stand-in stages whose data have `validation_rows`
/// validation rows and whose training records `validation` as validation bounds; checks the
/// report, asserts that it notes no problem and returns the training curves' SVG and caption.
fn training_curves(
    spec: &vaepipe_spec::Spec,
    validation_rows: u64,
    validation: fn(u64, f64) -> f64,
) -> (String, String) {
    let (_tmp, store) = temp_store();
    let registry = fake_registry_with(
        FakeData { validation_rows },
        FakeTrain { validation },
        FakeEval::default(),
    );
    let dir = report_dir(&run(&registry, &store, spec, &[]));
    check_report(&dir);
    let md = index_md(&dir);
    assert!(
        !md.contains("## Problems"),
        "nothing was dropped or unreadable:\n{md}"
    );
    figure(&dir, "training_curves")
}

#[test]
fn runs_without_a_validation_split_draw_no_validation_curve() {
    let spec = load(&spec_text("no-validation", r#""train.k" = [1, 5]"#, 3));

    // Neither run has a validation split: training curves only, and the caption says why.
    let (svg, caption) = training_curves(&spec, 0, no_validation);
    assert!(
        svg.contains("k=1 (train)") && svg.contains("k=5 (train)"),
        "{svg}"
    );
    assert!(
        !svg.contains("(validation)"),
        "a validation curve was drawn"
    );
    assert!(caption.contains("no validation split"), "{caption}");
    assert!(
        caption.contains("the k-sample ELBO for the VAE"),
        "the dashed curves are the training objective's bound: {caption}"
    );

    // Only k = 5 has one: its validation curve is drawn, k = 1's is not, and the caption says so.
    let (svg, caption) = training_curves(&spec, 10, validation_for_k5);
    assert!(svg.contains("k=5 (validation)"), "{svg}");
    assert!(
        !svg.contains("k=1 (validation)"),
        "k = 1 has no validation split"
    );
    assert!(caption.contains("No validation curve for k=1"), "{caption}");
}

#[test]
fn notes_from_the_evaluation_come_before_the_results_and_mark_their_rows() {
    let (_tmp, store) = temp_store();
    let note = "the model has a Bernoulli likelihood but the test data are not binary";
    let registry = fake_registry(FakeEval {
        note: Some(note),
        ..FakeEval::default()
    });
    let spec = load(&spec_text("notes", r#""train.k" = [1, 5]"#, 1));
    let dir = report_dir(&run(&registry, &store, &spec, &[]));
    check_report(&dir);
    let md = index_md(&dir);
    let notes_at = md
        .find("\n## Notes from the evaluation\n")
        .expect("a notes section");
    let results_at = md.find("\n## Results\n").expect("a results section");
    assert!(
        notes_at < results_at,
        "the notes come after the results:\n{md}"
    );
    // One note, shared by both runs' refit variants.
    let notes = &md[notes_at..results_at];
    let items: Vec<&str> = notes.lines().filter(|l| l.starts_with("- ")).collect();
    assert_eq!(items.len(), 1, "{notes}");
    assert!(
        items[0].starts_with("- \\[note 1\\] ")
            && items[0].contains("k=1 — mog K=3")
            && items[0].contains("k=5 — mog K=3")
            && items[0].contains("Bernoulli likelihood"),
        "{}",
        items[0]
    );
    // The results table marks the refit rows, and only them.
    let results = section(&md, "Results");
    let refit = md_rows(results, &["k=5", "mog K=3"]);
    assert_eq!(
        refit[0][2],
        format!(
            "{:.2} ± 0.25 \\[note 1\\]",
            synthetic_nll("elbo", 5, "refit")
        )
    );
    let standard = md_rows(results, &["k=5", "N(0, I)"]);
    assert_eq!(
        standard[0][2],
        format!("{:.2} ± 0.25", synthetic_nll("elbo", 5, "standard"))
    );
    // The intro states the bound's direction as what it is: a property of the expectation.
    assert!(md.contains("in expectation"), "{md}");
}
