//! The data stage: reads the train and test sources (IDX, CSV or Parquet), scales features,
//! binarizes (threshold, static) or keeps intensities for dynamic binarization, holds out a
//! seeded validation split, and writes `train.parquet`, `validation.parquet`, `test.parquet`
//! and `summary.json`.
//!
//! The test split never depends on the run's seed: a static binarization of it uses a fixed
//! seed, so runs that differ only in `pipeline.seed` are evaluated on the same test data.

use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vaepipe_data::Dataset;
use vaepipe_engine::{Context, Stage, StageError, pick};
use vaepipe_spec::{Binarize, DataFormat, DataSection, DataSource, Holdout, Scale};

use crate::util::seed_for;

pub struct DataStage;

#[derive(Deserialize)]
struct Params {
    data: DataSection,
    #[serde(default)]
    pipeline: Seed,
}

#[derive(Deserialize, Default)]
struct Seed {
    seed: u64,
}

/// `summary.json` of the data stage.
#[derive(Debug, Serialize)]
pub struct DataSummary {
    pub features: usize,
    pub image_shape: Option<(usize, usize)>,
    pub scale_factor: f32,
    pub binarize: Binarize,
    pub splits: std::collections::BTreeMap<String, SplitSummary>,
    pub seconds: f64,
}

/// One split in `summary.json`.
#[derive(Debug, Serialize)]
pub struct SplitSummary {
    #[serde(flatten)]
    pub summary: vaepipe_data::Summary,
    /// Every value is 0 or 1.
    pub binary: bool,
}

/// Seed of the static binarization of the test split: fixed, independent of `pipeline.seed`.
const TEST_BINARIZATION_SEED: u64 = 0x7e57;

impl Stage for DataStage {
    fn name(&self) -> &'static str {
        "data"
    }
    fn version(&self) -> u32 {
        2
    }
    fn inputs(&self) -> &'static [&'static str] {
        &[]
    }
    /// `[data]`, plus the run's seed only when it matters (a validation split or a static
    /// binarization), so a sweep over seeds shares one data stage otherwise.
    fn params(&self, point: &Value) -> Value {
        let data = &point["data"];
        let holds_out = data["validation"].as_object().is_some_and(|h| {
            h.get("rows").and_then(Value::as_u64).is_some_and(|n| n > 0)
                || h.get("fraction")
                    .and_then(Value::as_f64)
                    .is_some_and(|f| f > 0.0)
        });
        let static_draw = data["binarize"] == "static";
        if holds_out || static_draw {
            pick(point, &["data", "pipeline.seed"])
        } else {
            pick(point, &["data"])
        }
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
        (f, s) => bail!("data source {s:?} does not fit format `{f}`"),
    })
}

fn run(ctx: &Context) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let p: Params = serde_json::from_value(ctx.params.clone()).context("data stage parameters")?;
    let d = &p.data;
    ctx.progress(0, 4, "reading");
    let mut train = read_source(&d.train, d.format, d.label_column.as_deref())?;
    let test = read_source(&d.test, d.format, d.label_column.as_deref())?;
    ctx.log(format!(
        "read {} train and {} test rows of {} features in {:.2}s",
        train.rows,
        test.rows,
        train.features,
        t0.elapsed().as_secs_f64()
    ));
    let test = align_features(&train, test, d)?;
    if d.train_rows > 0 && d.train_rows < train.rows {
        train = vaepipe_data::subset(&train, &(0..d.train_rows).collect::<Vec<_>>())?;
    }
    let mut test = test;
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
        let binary = ds.x.iter().all(|v| *v == 0.0 || *v == 1.0);
        splits.insert(
            name.to_string(),
            SplitSummary {
                summary: vaepipe_data::summary(ds),
                binary,
            },
        );
    }
    let summary = DataSummary {
        features: train.features,
        image_shape: train.image_shape,
        scale_factor: factor,
        binarize: d.binarize,
        splits,
        seconds: t0.elapsed().as_secs_f64(),
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

/// Makes the test features line up with the training features by name: the same names in
/// another order are reordered; different names are an error naming both files.
fn align_features(train: &Dataset, test: Dataset, d: &DataSection) -> anyhow::Result<Dataset> {
    if train.feature_names == test.feature_names {
        return Ok(test);
    }
    let files = |s: &DataSource| match s {
        DataSource::Idx { images, .. } => images.path.display().to_string(),
        DataSource::Table { path } => path.path.display().to_string(),
    };
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
