//! The data stage: reads the train and test sources (IDX, CSV or Parquet), scales features,
//! binarizes (threshold, static) or keeps intensities for dynamic binarization, holds out a
//! seeded validation split, and writes `train.parquet`, `validation.parquet`, `test.parquet`
//! and `summary.json` (types in `crate::artifacts::data`). Under dynamic binarization it also
//! writes the test set as evaluated, `test_binarized.parquet`: one fixed draw with
//! `eval.binarization_seed`, which the eval stage measures on (the prior stage's test
//! measurements use the same draw).
//!
//! With a test file, the test split never depends on the run's seed: a static binarization of
//! it uses a fixed seed, so runs that differ only in `pipeline.seed` are evaluated on the same
//! test data. With a held-out test split (`test = { fraction | rows }`) the rows are drawn
//! from the training source with `seed_for(pipeline.seed, "data/test-split")`, stratified by
//! label unless `data.stratify = false`.
//!
//! The image shape is `data.shape` when given (`[]`: not images), else the IDX dimensions,
//! else a square feature count of at least 4 × 4 (64 features → 8 × 8).

use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::Value;
use vaepipe_data::Dataset;
use vaepipe_engine::{Context, Stage, StageError, pick};
use vaepipe_spec::{Binarize, DataFormat, DataSection, DataSource, Holdout, Scale};

use crate::artifacts::{
    DataSummary, SplitSummary, TEST_BINARIZED, TestBinarized, TestSplit, binarize_test,
};
use crate::util::seed_for;

pub struct DataStage;

#[derive(Deserialize)]
struct Params {
    data: DataSection,
    #[serde(default)]
    pipeline: Seed,
    /// `eval.binarization_seed`, present under dynamic binarization.
    #[serde(default)]
    eval: Option<EvalSeed>,
}

#[derive(Deserialize)]
struct EvalSeed {
    binarization_seed: u64,
}

#[derive(Deserialize, Default)]
struct Seed {
    seed: u64,
}

/// Seed of the static binarization of the test split: fixed, independent of `pipeline.seed`.
const TEST_BINARIZATION_SEED: u64 = 0x7e57;

impl Stage for DataStage {
    fn name(&self) -> &'static str {
        "data"
    }
    fn version(&self) -> u32 {
        // 4: the evaluated test set under dynamic binarization (`test_binarized.parquet`).
        4
    }
    fn inputs(&self) -> &'static [&'static str] {
        &[]
    }
    /// `[data]`, plus the run's seed only when it matters (a validation split or a static
    /// binarization), so a sweep over seeds shares one data stage otherwise; under dynamic
    /// binarization also `eval.binarization_seed`, the seed of the evaluated test set's draw.
    fn params(&self, point: &Value) -> Value {
        let data = &point["data"];
        let holds_out = data["validation"].as_object().is_some_and(|h| {
            h.get("rows").and_then(Value::as_u64).is_some_and(|n| n > 0)
                || h.get("fraction")
                    .and_then(Value::as_f64)
                    .is_some_and(|f| f > 0.0)
        });
        let static_draw = data["binarize"] == "static";
        let test_split = data["test"]["kind"] == "split";
        let mut keys = vec!["data"];
        if holds_out || static_draw || test_split {
            keys.push("pipeline.seed");
        }
        if data["binarize"] == "dynamic" {
            keys.push("eval.binarization_seed");
        }
        pick(point, &keys)
    }
    fn run(&self, ctx: &Context) -> Result<(), StageError> {
        run(ctx).map_err(StageError::from)
    }
}

fn read_source(
    src: &DataSource,
    format: DataFormat,
    label_column: Option<&str>,
) -> anyhow::Result<Dataset> {
    Ok(match (format, src) {
        (DataFormat::Idx, DataSource::Idx { images, labels }) => {
            vaepipe_data::read_idx(&images.path, labels.as_ref().map(|l| l.path.as_path()))?
        }
        (DataFormat::Csv, DataSource::Table { path }) => {
            vaepipe_data::read_csv(&path.path, label_column)?
        }
        (DataFormat::Parquet, DataSource::Table { path }) => {
            vaepipe_data::read_parquet(&path.path, label_column)?
        }
        (_, DataSource::Split { .. }) => {
            bail!(
                "data.test: a held-out split is not a file (internal error: read it from data.train)"
            )
        }
        (f, s) => bail!("data source {s:?} does not fit format `{f}`"),
    })
}

fn run(ctx: &Context) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let p: Params = serde_json::from_value(ctx.params.clone()).context("data stage parameters")?;
    let d = &p.data;
    ctx.progress(0, 4, "reading");
    let mut train = read_source(&d.train, d.format, d.label_column.as_deref())?;
    let mut test_split = None;
    let test = match &d.test {
        DataSource::Split { held_out } => {
            let (tr, te, info) = hold_out(train, *held_out, d, p.pipeline.seed)?;
            test_split = Some(info);
            train = tr;
            te
        }
        src => read_source(src, d.format, d.label_column.as_deref())?,
    };
    let (image_shape, image_shape_source) = resolve_shape(&train, d)?;
    ctx.log(format!(
        "read {} train and {} test rows of {} features in {:.2}s",
        train.rows,
        test.rows,
        train.features,
        t0.elapsed().as_secs_f64()
    ));
    let mut test = align_features(&train, test, d)?;
    // The Parquet metadata carries a two-dimensional shape (`vaepipe.image_shape`).
    let flat_shape = match image_shape.as_deref() {
        Some(&[h, w]) => Some((h, w)),
        _ => None,
    };
    train.image_shape = flat_shape;
    test.image_shape = flat_shape;
    if d.train_rows > 0 && d.train_rows < train.rows {
        train = vaepipe_data::subset(&train, &(0..d.train_rows).collect::<Vec<_>>())?;
    }
    if d.test_rows > 0 && d.test_rows < test.rows {
        test = vaepipe_data::subset(&test, &(0..d.test_rows).collect::<Vec<_>>())?;
    }
    ctx.progress(1, 4, "scaling");
    let factor = vaepipe_data::scale(
        &mut train,
        match d.scale {
            Scale::None => vaepipe_data::Scale::None,
            Scale::Max => vaepipe_data::Scale::Max,
        },
    )?;
    vaepipe_data::apply_scale(&mut test, factor)?;
    if d.binarize != Binarize::None {
        vaepipe_data::check_unit_interval(&train).context(
            "train data (binarization needs values in [0, 1]; set data.scale = \"max\")",
        )?;
        vaepipe_data::check_unit_interval(&test)
            .context("test data (binarization needs values in [0, 1]; set data.scale = \"max\")")?;
    }
    let n_val = match d.validation {
        Holdout::Rows(n) => n,
        Holdout::Fraction(f) => (f * train.rows as f64).round() as usize,
    };
    if n_val >= train.rows {
        bail!(
            "data.validation holds out {n_val} rows, but the training data has only {} (after train_rows)",
            train.rows
        );
    }
    let (mut train, mut validation) = vaepipe_data::split_validation(
        &train,
        n_val,
        seed_for(p.pipeline.seed, "data/validation"),
    )?;
    ctx.progress(2, 4, "binarizing");
    match d.binarize {
        Binarize::None | Binarize::Dynamic => {}
        Binarize::Threshold => {
            for ds in [&mut train, &mut validation, &mut test] {
                vaepipe_data::binarize_threshold(ds, d.threshold as f32);
            }
        }
        Binarize::Static => {
            for (name, ds) in [("train", &mut train), ("validation", &mut validation)] {
                vaepipe_data::binarize_static(
                    ds,
                    seed_for(p.pipeline.seed, &format!("data/static/{name}")),
                )?;
            }
            vaepipe_data::binarize_static(
                &mut test,
                seed_for(TEST_BINARIZATION_SEED, "data/static/test"),
            )?;
        }
    }
    ctx.progress(3, 4, "writing");
    let mut splits = std::collections::BTreeMap::new();
    for (name, ds) in [
        ("train", &train),
        ("validation", &validation),
        ("test", &test),
    ] {
        vaepipe_data::write_dataset(&ctx.out.join(format!("{name}.parquet")), ds)?;
        splits.insert(name.to_string(), SplitSummary::of(ds));
    }
    // Under dynamic binarization the test set is evaluated as one fixed draw, written once here
    // for every stage that measures on it.
    let test_binarized = match (d.binarize, &p.eval) {
        (Binarize::Dynamic, Some(e)) => {
            let drawn = binarize_test(&test, e.binarization_seed);
            vaepipe_data::write_dataset(&ctx.out.join(TEST_BINARIZED), &drawn)?;
            Some(TestBinarized {
                file: TEST_BINARIZED.to_string(),
                seed: e.binarization_seed,
            })
        }
        _ => None,
    };
    let summary = DataSummary {
        features: train.features,
        image_shape,
        image_shape_source: image_shape_source.map(str::to_string),
        scale_factor: factor,
        binarize: d.binarize,
        splits,
        test_split,
        seconds: t0.elapsed().as_secs_f64(),
        test_binarized,
    };
    crate::write_json(&ctx.out.join("summary.json"), &summary)?;
    ctx.log(format!(
        "wrote train {} / validation {} / test {} rows in {:.2}s",
        train.rows,
        validation.rows,
        test.rows,
        t0.elapsed().as_secs_f64()
    ));
    ctx.progress(4, 4, "done");
    Ok(())
}

/// The file a source reads (a held-out split reads the training source).
fn source_name(s: &DataSource, d: &DataSection) -> String {
    match s {
        DataSource::Idx { images, .. } => images.path.display().to_string(),
        DataSource::Table { path } => path.path.display().to_string(),
        DataSource::Split { .. } => match &d.train {
            DataSource::Split { .. } => "the training source".to_string(),
            t => source_name(t, d),
        },
    }
}

/// Holds out the test rows of `data.test = { fraction | rows }` from the training source.
fn hold_out(
    source: Dataset,
    held_out: Holdout,
    d: &DataSection,
    pipeline_seed: u64,
) -> anyhow::Result<(Dataset, Dataset, TestSplit)> {
    let file = source_name(&d.train, d);
    let n = source.rows;
    let (n_test, method, fraction) = match held_out {
        Holdout::Rows(r) => (r, "rows", None),
        Holdout::Fraction(f) => ((f * n as f64).round() as usize, "fraction", Some(f)),
    };
    if n_test == 0 || n_test >= n {
        match held_out {
            Holdout::Rows(r) => bail!(
                "data.test.rows = {r}: must be at least 1 and fewer than the {n} rows of {file}"
            ),
            Holdout::Fraction(f) => bail!(
                "data.test.fraction = {f} of the {n} rows of {file} holds out {n_test} rows; \
                 a test split needs at least 1 row and leaves at least 1 for training"
            ),
        }
    }
    let seed = seed_for(pipeline_seed, "data/test-split");
    let stratified = d.stratify && source.labels.is_some();
    let (train, test) = vaepipe_data::split_holdout(&source, n_test, seed, stratified)
        .with_context(|| format!("holding out the test split of {file}"))?;
    let info = TestSplit {
        method: method.to_string(),
        fraction,
        source_rows: n,
        test_rows: test.rows,
        train_rows: train.rows,
        seed,
        pipeline_seed,
        stratified,
        test_label_counts: vaepipe_data::summary(&test).label_counts,
        train_label_counts: vaepipe_data::summary(&train).label_counts,
    };
    Ok((train, test, info))
}

/// Smallest side of a square feature count taken as an image (16 features → 4 × 4).
const MIN_SQUARE_SIDE: usize = 4;

/// The image shape written to `summary.json`, and where it came from.
fn resolve_shape(
    train: &Dataset,
    d: &DataSection,
) -> anyhow::Result<(Option<Vec<usize>>, Option<&'static str>)> {
    let f = train.features;
    if let Some(shape) = &d.shape {
        if shape.is_empty() {
            return Ok((None, None));
        }
        let product = shape.iter().try_fold(1usize, |a, b| a.checked_mul(*b));
        if product != Some(f) {
            bail!(
                "data.shape = {shape:?} has {} values per row, but {} has {f} features",
                product.map_or("too many".to_string(), |p| p.to_string()),
                source_name(&d.train, d)
            );
        }
        // [1, h, w] is the same as [h, w].
        let shape = if shape.len() == 3 && shape[0] == 1 {
            shape[1..].to_vec()
        } else {
            shape.clone()
        };
        return Ok((Some(shape), Some("spec")));
    }
    if let Some((h, w)) = train.image_shape {
        return Ok((Some(vec![h, w]), Some("idx")));
    }
    let side = (f as f64).sqrt().round() as usize;
    if side >= MIN_SQUARE_SIDE && side * side == f {
        return Ok((Some(vec![side, side]), Some("square")));
    }
    Ok((None, None))
}

/// Makes the test features line up with the training features by name: the same names in
/// another order are reordered; different names are an error naming both files.
fn align_features(train: &Dataset, test: Dataset, d: &DataSection) -> anyhow::Result<Dataset> {
    if train.feature_names == test.feature_names {
        return Ok(test);
    }
    let files = |s: &DataSource| source_name(s, d);
    let (a, b) = (files(&d.train), files(&d.test));
    if train.features != test.features {
        bail!(
            "{a} has {} features but {b} has {}; train and test need the same feature columns",
            train.features,
            test.features
        );
    }
    let position: std::collections::HashMap<&str, usize> = test
        .feature_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut order = Vec::with_capacity(train.features);
    for name in &train.feature_names {
        match position.get(name.as_str()) {
            Some(i) => order.push(*i),
            None => bail!(
                "feature column `{name}` of {a} is missing from {b}; train and test need the same feature columns"
            ),
        }
    }
    let mut x = Vec::with_capacity(test.x.len());
    for r in 0..test.rows {
        let row = test.row(r);
        x.extend(order.iter().map(|i| row[*i]));
    }
    Ok(Dataset {
        x,
        feature_names: train.feature_names.clone(),
        ..test
    })
}
