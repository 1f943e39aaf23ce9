//! Reading a run from the spec tree: every key of docs/spec.md checked where it enters, every
//! default filled in, all errors collected with their origin (file, line, column, key).

use crate::model::read_model;
use crate::node::Node;
use crate::read::{Reader, SpecPath, Table, positive, positive_f};
use crate::schema::*;
use crate::source::Origin;

/// Reads one run from a tree whose `[sweep]` has already been applied.
pub fn read_run(root: &Node, r: &mut Reader) -> Option<RunConfig> {
    let before = r.errors.len();
    let mut top = r.table(root, "")?;
    let empty = Node::table(root.origin.clone());
    let pipeline_node = top.node("pipeline");
    let pipeline = read_pipeline(
        pipeline_node.unwrap_or(&empty),
        &root.origin,
        r,
        pipeline_node.is_some(),
    );
    let data = match top.node("data") {
        Some(n) => read_data(n, r),
        None => {
            r.error(&root.origin, "data", "missing required section [data]");
            None
        }
    };
    let model = read_model(section(&mut top, "model", &empty), r);
    let train = read_train(section(&mut top, "train", &empty), r);
    let prior = read_prior(section(&mut top, "prior", &empty), r);
    let eval = read_eval(section(&mut top, "eval", &empty), r);
    let report = read_report(section(&mut top, "report", &empty), r, pipeline.as_ref());
    top.node("sweep");
    top.finish(r, TOP_LEVEL);

    let run = RunConfig {
        pipeline: pipeline?,
        data: data?,
        model: model?,
        train: train?,
        prior: prior?,
        eval: eval?,
        report: report?,
    };
    cross_checks(&run, root, r);
    (r.errors.len() == before).then_some(run)
}

fn section<'n>(top: &mut Table<'n>, name: &str, empty: &'n Node) -> &'n Node {
    top.node(name).unwrap_or(empty)
}

fn read_pipeline(
    node: &Node,
    root: &Origin,
    r: &mut Reader,
    present: bool,
) -> Option<PipelineSection> {
    if !present {
        r.error(
            root,
            "pipeline",
            "missing required section [pipeline] (it needs at least `name`)",
        );
        return None;
    }
    let mut t = r.table(node, "pipeline")?;
    let name = t.req::<String>(r, "name").and_then(|(n, origin)| {
        if n.trim().is_empty() {
            r.error(
                origin,
                "pipeline.name",
                "the pipeline name must not be empty",
            );
            None
        } else if n.chars().any(|c| c.is_control()) {
            r.error(
                origin,
                "pipeline.name",
                "the pipeline name must not contain control characters",
            );
            None
        } else {
            Some(n)
        }
    });
    let seed = t.get(r, "seed", 0u64);
    let description = t.get(r, "description", String::new());
    t.finish(r, &["name", "seed", "description"]);
    Some(PipelineSection {
        name: name?,
        seed,
        description,
    })
}

fn read_source(
    node: &Node,
    path: &str,
    format: Option<DataFormat>,
    r: &mut Reader,
) -> Option<DataSource> {
    let mut t = r.table(node, path)?;

    match format {
        Some(DataFormat::Idx) => {
            let images = t
                .req::<SpecPath>(r, "images")
                .and_then(|(p, o)| existing_file(p, o, &t.key_path("images"), r));
            let labels = t
                .opt::<SpecPath>(r, "labels")
                .map(|(p, o)| existing_file(p, o, &t.key_path("labels"), r));
            t.finish(r, &["images", "labels"]);
            let labels = match labels {
                Some(None) => return None,
                Some(Some(l)) => Some(l),
                None => None,
            };
            Some(DataSource::Idx {
                images: images?,
                labels,
            })
        }
        Some(DataFormat::Csv | DataFormat::Parquet) => {
            let file = t
                .req::<SpecPath>(r, "path")
                .and_then(|(p, o)| existing_file(p, o, &t.key_path("path"), r));
            t.finish(r, &["path"]);
            Some(DataSource::Table { path: file? })
        }
        None => {
            // The format itself is invalid (already reported); still mark the keys as known.
            for k in ["images", "labels", "path"] {
                t.node(k);
            }
            t.finish(r, &["images", "labels", "path"]);
            None
        }
    }
}

fn existing_file(p: SpecPath, origin: &Origin, key: &str, r: &mut Reader) -> Option<FileRef> {
    let written_in = r.sources.get(origin.source).name.clone();
    match std::fs::metadata(&p.0) {
        Ok(m) if m.is_file() => Some(FileRef { path: p.0 }),
        Ok(_) => {
            r.error(origin, key, format!("{} is not a file", p.0.display()));
            None
        }
        Err(e) => {
            r.error_help(
                origin,
                key,
                format!("cannot read {}: {e}", p.0.display()),
                if written_in.starts_with("--set ") {
                    "relative paths given with --set are resolved against the working directory"
                        .to_string()
                } else {
                    format!("relative paths are resolved against the directory of {written_in}")
                },
            );
            None
        }
    }
}

fn read_data(node: &Node, r: &mut Reader) -> Option<DataSection> {
    let mut t = r.table(node, "data")?;
    let format = t.req::<DataFormat>(r, "format").map(|(f, _)| f);
    let format_ok = format;
    let train = match t.node("train") {
        Some(n) => read_source(n, "data.train", format_ok, r),
        None => {
            r.error(
                &t.origin,
                "data.train",
                "missing required key `train` in [data]",
            );
            None
        }
    };
    let test = match t.node("test") {
        Some(n) if is_split(n) => read_split(n, r),
        Some(n) => read_source(n, "data.test", format_ok, r),
        None => {
            r.error(
                &t.origin,
                "data.test",
                "missing required key `test` in [data]",
            );
            None
        }
    };
    let label_column = t.opt::<String>(r, "label_column").map(|(v, _)| v);
    if let (Some(DataFormat::Idx), Some(_)) = (format, &label_column)
        && let Some(n) = t.node("label_column")
    {
        r.error(&n.origin, "data.label_column", "`label_column` applies to csv and parquet data, not idx (labels come from the `labels` file)");
    }
    let scale = t.get(r, "scale", Scale::Max);
    let binarize = t.get(r, "binarize", Binarize::Dynamic);
    let threshold = t.get_checked(r, "threshold", 0.5f64, |v| {
        if *v > 0.0 && *v < 1.0 {
            Ok(())
        } else {
            Err(format!("must lie strictly between 0 and 1, found {v}"))
        }
    });
    let validation = match t.node("validation") {
        None => Some(Holdout::Rows(0)),
        Some(n) => match &n.value {
            crate::node::Value::Int(i) if *i >= 0 => Some(Holdout::Rows(*i as usize)),
            // 0.0 holds out nothing, like 0: one canonical form, one cache key.
            crate::node::Value::Float(f) if *f == 0.0 => Some(Holdout::Rows(0)),
            crate::node::Value::Float(f) if *f > 0.0 && *f < 1.0 => Some(Holdout::Fraction(*f)),
            crate::node::Value::Int(_) | crate::node::Value::Float(_) => {
                r.error_help(
                    &n.origin,
                    "data.validation",
                    "must be a row count ≥ 0 or a fraction in [0, 1)",
                    "e.g. validation = 400 or validation = 0.1",
                );
                None
            }
            other => {
                r.error(
                    &n.origin,
                    "data.validation",
                    format!(
                        "expected an integer (rows) or a float (fraction), found {}",
                        other.type_name()
                    ),
                );
                None
            }
        },
    };
    let train_rows = t.get(r, "train_rows", 0usize);
    let test_rows = t.get(r, "test_rows", 0usize);
    let stratify = t.get(r, "stratify", true);
    let shape = t.opt::<Vec<usize>>(r, "shape").map(|(v, o)| {
        if !matches!(v.len(), 0 | 2 | 3) || v.contains(&0) {
            r.error_help(
                o,
                "data.shape",
                format!(
                    "must be [] (not images), [h, w] or [c, h, w] with every size ≥ 1, found {v:?}"
                ),
                "e.g. shape = [8, 8] for 64 features",
            );
        }
        v
    });
    t.finish(
        r,
        &[
            "format",
            "train",
            "test",
            "label_column",
            "scale",
            "binarize",
            "threshold",
            "validation",
            "train_rows",
            "test_rows",
            "stratify",
            "shape",
        ],
    );
    Some(DataSection {
        format: format?,
        train: train?,
        test: test?,
        label_column,
        scale,
        binarize,
        threshold,
        validation: validation?,
        train_rows,
        test_rows,
        stratify,
        shape,
    })
}

/// `data.test = { fraction = F }` or `{ rows = N }`: a held-out split of the training source.
fn is_split(node: &Node) -> bool {
    match &node.value {
        crate::node::Value::Table(entries) => entries
            .iter()
            .any(|(k, _)| k.name == "fraction" || k.name == "rows"),
        _ => false,
    }
}

fn read_split(node: &Node, r: &mut Reader) -> Option<DataSource> {
    let mut t = r.table(node, "data.test")?;
    let fraction = t.opt::<f64>(r, "fraction");
    let rows = t.opt::<usize>(r, "rows");
    for k in ["images", "labels", "path"] {
        if let Some(n) = t.node(k) {
            r.error_help(
                &n.origin,
                &format!("data.test.{k}"),
                "a held-out test split (`fraction` or `rows`) takes no file",
                "either `test = { fraction = 0.15 }` (or `rows = N`) or a test file, not both",
            );
        }
    }
    t.finish(r, &["fraction", "rows"]);
    match (fraction, rows) {
        (Some(_), Some((_, o))) => {
            r.error(o, "data.test.rows", "give `fraction` or `rows`, not both");
            None
        }
        (Some((f, o)), None) => {
            if f > 0.0 && f < 1.0 {
                Some(DataSource::Split {
                    held_out: Holdout::Fraction(f),
                })
            } else {
                r.error_help(
                    o,
                    "data.test.fraction",
                    format!("must lie strictly between 0 and 1, found {f}"),
                    "e.g. test = { fraction = 0.15 }",
                );
                None
            }
        }
        (None, Some((n, o))) => {
            if n >= 1 {
                Some(DataSource::Split {
                    held_out: Holdout::Rows(n),
                })
            } else {
                r.error_help(
                    o,
                    "data.test.rows",
                    "must be at least 1 (and fewer than the training source's rows)",
                    "e.g. test = { rows = 300 }",
                );
                None
            }
        }
        // A type error of `fraction` or `rows` is already reported.
        (None, None) => None,
    }
}

fn read_train(node: &Node, r: &mut Reader) -> Option<TrainSection> {
    let mut t = r.table(node, "train")?;
    let objective = t.get(r, "objective", Objective::Elbo);
    let k = t.get_checked(r, "k", 1usize, positive);
    let analytic_kl = t.get(r, "analytic_kl", false);
    // DReG by default: measured (issue 13, docs/spec.md) to learn more per epoch at the same cost;
    // the analytic-KL ELBO has no DReG form, so there the default stays the plain estimator.
    let default_estimator = if analytic_kl {
        Estimator::Reparam
    } else {
        Estimator::Dreg
    };
    let estimator = t.get(r, "estimator", default_estimator);
    let batch_size = t.get_checked(r, "batch_size", 20usize, positive);
    let epochs = t.get_checked(r, "epochs", 10usize, positive);
    let lr = t.get_checked(r, "lr", 1e-3f64, positive_f);
    let betas = t.get_checked(r, "betas", vec![0.9f64, 0.999], |b| {
        if b.len() != 2 {
            Err(format!(
                "expected two numbers [beta1, beta2], found {}",
                b.len()
            ))
        } else if b.iter().any(|x| !(0.0..1.0).contains(x)) {
            Err("each beta must lie in [0, 1)".into())
        } else {
            Ok(())
        }
    });
    let eps = t.get_checked(r, "eps", 1e-4f64, positive_f);
    let schedule = t.get(r, "schedule", Schedule::Constant);
    let step_epochs = t.get_checked(r, "step_epochs", 10usize, positive);
    let step_gamma = t.get_checked(r, "step_gamma", 0.5f64, |g| {
        if *g > 0.0 && *g <= 1.0 {
            Ok(())
        } else {
            Err(format!("must lie in (0, 1], found {g}"))
        }
    });
    let patience = t.get(r, "patience", 0usize);
    let time_limit = t.opt::<f64>(r, "time_limit").and_then(|(v, origin)| {
        if v > 0.0 {
            Some(v)
        } else {
            r.error_help(
                origin,
                "train.time_limit",
                format!("must be greater than 0 seconds, found {v}"),
                "leave time_limit out for no budget",
            );
            None
        }
    });
    let m = t.get_checked(r, "m", 1usize, positive);
    // A β that is given but invalid (reported here) is kept as given, NaN if it did not read,
    // so that it is not also reported missing; the spec does not resolve either way.
    let beta = t.node("beta").map(|_| {
        t.opt::<f64>(r, "beta").map_or(f64::NAN, |(v, origin)| {
            if !(0.0..=1.0).contains(&v) {
                r.error(
                    origin,
                    "train.beta",
                    format!("CIWAE's beta must lie in [0, 1], found {v}"),
                );
            }
            v
        })
    });
    t.finish(
        r,
        &[
            "objective",
            "k",
            "estimator",
            "analytic_kl",
            "batch_size",
            "epochs",
            "lr",
            "betas",
            "eps",
            "schedule",
            "step_epochs",
            "step_gamma",
            "patience",
            "time_limit",
            "m",
            "beta",
        ],
    );
    let betas = [
        *betas.first().unwrap_or(&0.9),
        *betas.get(1).unwrap_or(&0.999),
    ];
    Some(TrainSection {
        objective,
        k,
        estimator,
        analytic_kl,
        batch_size,
        epochs,
        lr,
        betas,
        eps,
        schedule,
        step_epochs,
        step_gamma,
        patience,
        time_limit,
        m,
        beta,
    })
}

fn read_prior(node: &Node, r: &mut Reader) -> Option<PriorSection> {
    let mut t = r.table(node, "prior")?;
    let method = t.get(r, "method", PriorMethod::StandardNormal);
    let components = t.get_checked(r, "components", 10usize, positive);
    let subset = t.get(r, "subset", 0usize);
    let fit = t.get(r, "fit", MogFit::Em);
    let steps = t.get_checked(r, "steps", 200usize, positive);
    let lr = t.get_checked(r, "lr", 1e-2f64, positive_f);
    let samples = t.get_checked(r, "samples", 20_000usize, positive);
    let init = t.get(r, "init", VampInit::Data);
    let then = t.get(r, "then", Then::None);
    let finetune_epochs = t.get_checked(r, "finetune_epochs", 5usize, positive);
    t.finish(
        r,
        &[
            "method",
            "components",
            "subset",
            "fit",
            "steps",
            "lr",
            "samples",
            "init",
            "then",
            "finetune_epochs",
        ],
    );
    Some(PriorSection {
        method,
        components,
        subset,
        fit,
        steps,
        lr,
        samples,
        init,
        then,
        finetune_epochs,
    })
}

fn read_eval(node: &Node, r: &mut Reader) -> Option<EvalSection> {
    let mut t = r.table(node, "eval")?;
    let k = t.get_checked(r, "k", 5000usize, positive);
    let images = t.get(r, "images", 0usize);
    let mut curve_k = t.get_checked(
        r,
        "curve_k",
        vec![1usize, 2, 5, 10, 50, 100, 500, 5000],
        |v| {
            if v.is_empty() {
                Err("needs at least one k".into())
            } else if v.contains(&0) {
                Err("every k must be at least 1".into())
            } else {
                Ok(())
            }
        },
    );
    curve_k.sort_unstable();
    curve_k.dedup();
    let curve_images = t.get_checked(r, "curve_images", 200usize, positive);
    let active_threshold = t.get_checked(r, "active_threshold", 0.01f64, positive_f);
    let samples = t.get(r, "samples", 64usize);
    let reconstructions = t.get(r, "reconstructions", 16usize);
    let binarization_seed = t.get(r, "binarization_seed", 0u64);
    t.finish(
        r,
        &[
            "k",
            "images",
            "curve_k",
            "curve_images",
            "active_threshold",
            "samples",
            "reconstructions",
            "binarization_seed",
        ],
    );
    Some(EvalSection {
        k,
        images,
        curve_k,
        curve_images,
        active_threshold,
        samples,
        reconstructions,
        binarization_seed,
    })
}

fn read_report(
    node: &Node,
    r: &mut Reader,
    pipeline: Option<&PipelineSection>,
) -> Option<ReportSection> {
    let mut t = r.table(node, "report")?;
    let title = t.opt::<String>(r, "title").map(|(v, _)| v);
    t.finish(r, &["title"]);
    let title = title
        .or_else(|| pipeline.map(|p| p.name.clone()))
        .unwrap_or_default();
    Some(ReportSection { title })
}

/// `train.m` and `train.beta` against `train.objective` (Rainforth et al. 2018's variants).
fn objective_checks(t: &TrainSection, at: &dyn Fn(&[&str]) -> Origin, r: &mut Reader) {
    let grouped = matches!(t.objective, Objective::Miwae | Objective::Piwae);
    if t.m != 1 && !grouped {
        r.error_help(
            &at(&["train", "m"]),
            "train.m",
            format!(
                "m = {} groups, but objective = \"{}\" has no groups",
                t.m, t.objective
            ),
            "m is the number of groups of objective = \"miwae\" or \"piwae\"; leave it out otherwise",
        );
    }
    if grouped && t.m.checked_mul(t.k).is_none() {
        r.error(
            &at(&["train", "m"]),
            "train.m",
            format!("m·k = {}·{} samples per example overflows", t.m, t.k),
        );
    }
    match (t.objective, t.beta) {
        (Objective::Ciwae, None) => r.error_help(
            &at(&["train", "objective"]),
            "train.beta",
            "objective = \"ciwae\" needs beta, the ELBO's share in [0, 1]",
            "e.g. beta = 0.05 (Rainforth et al. 2018)",
        ),
        (o, Some(b)) if o != Objective::Ciwae => r.error_help(
            &at(&["train", "beta"]),
            "train.beta",
            format!("beta = {b} is CIWAE's mixing weight, but objective = \"{o}\""),
            "use objective = \"ciwae\", or leave beta out",
        ),
        _ => {}
    }
}

/// Checks that involve more than one key.
fn cross_checks(run: &RunConfig, root: &Node, r: &mut Reader) {
    let at = |path: &[&str]| -> Origin {
        let mut n = root;
        for p in path {
            match n.get(p) {
                Some(c) => n = c,
                None => break,
            }
        }
        n.origin.clone()
    };
    let t = &run.train;
    if t.analytic_kl && (t.objective != Objective::Elbo || t.k != 1) {
        r.error_help(
            &at(&["train", "analytic_kl"]),
            "train.analytic_kl",
            format!("the analytic KL needs objective = \"elbo\" and k = 1 (found objective = \"{}\", k = {})", t.objective, t.k),
            "the analytic-KL ELBO is a different estimator; with k > 1 use the Monte Carlo ELBO or the IWAE bound",
        );
    }
    objective_checks(t, &at, r);
    if t.analytic_kl && t.estimator == Estimator::Dreg {
        r.error(
            &at(&["train", "estimator"]),
            "train.estimator",
            "the DReG estimator has no analytic-KL form; set analytic_kl = false",
        );
    }
    let holds_out = match run.data.validation {
        Holdout::Rows(n) => n > 0,
        Holdout::Fraction(f) => f > 0.0,
    };
    if t.patience > 0 && !holds_out {
        r.error_help(
            &at(&["train", "patience"]),
            "train.patience",
            "early stopping needs a validation split, but data.validation holds out nothing",
            "set data.validation (rows, e.g. 1000, or a fraction, e.g. 0.1), or patience = 0",
        );
    }
    let m = &run.model;
    if run.prior.method == PriorMethod::Vamp && !m.upper.is_empty() {
        r.error_help(
            &at(&["prior", "method"]),
            "prior.method",
            format!(
                "prior.method = \"vamp\" needs one stochastic layer, but model.layers has {}",
                m.stochastic_layers()
            ),
            "the VampPrior's pseudo-inputs are encoded by q(z1|x) only; use \"mog\" or \"aggregate-posterior\" (refit on the top layer)",
        );
    }
    if m.likelihood == Likelihood::Gaussian
        && matches!(
            run.data.binarize,
            Binarize::Static | Binarize::Dynamic | Binarize::Threshold
        )
    {
        r.error_help(
            &at(&["model", "likelihood"]),
            "model.likelihood",
            format!("a Gaussian likelihood on binarized data (binarize = \"{}\") has no meaningful density", run.data.binarize),
            "use likelihood = \"bernoulli\", or binarize = \"none\"",
        );
    }
}
