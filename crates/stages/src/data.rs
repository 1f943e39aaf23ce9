//! The data stage: reads the train and test sources (IDX, CSV or Parquet), scales features,
//! binarizes (threshold, static) or keeps intensities for dynamic binarization, holds out a
//! seeded validation split, and writes `train.parquet`, `validation.parquet`, `test.parquet`
//! and `summary.json`.

use std::time::Instant;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vaepipe_data::Dataset;
use vaepipe_engine::{pick, Context, Stage, StageError};
use vaepipe_spec::{Binarize, DataFormat, DataSection, DataSource, Holdout, Scale};

use crate::util::seed_for;

pub struct DataStage;

#[derive(Deserialize)]
struct Params {
    data: DataSection,
    pipeline: Seed,
}

#[derive(Deserialize)]
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
    pub splits: std::collections::BTreeMap<String, vaepipe_data::Summary>,
    pub seconds: f64,
}

impl Stage for DataStage {
    fn name(&self) -> &'static str {
        "data"
    }
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> &'static [&'static str] {
        &[]
    }
    fn params(&self, point: &Value) -> Value {
        pick(point, &["data", "pipeline.seed"])
    }
    fn run(&self, ctx: &Context) -> Result<(), StageError> {
        run(ctx).map_err(StageError::from)
    }
}

fn read_source(src: &DataSource, format: DataFormat, label_column: Option<&str>) -> anyhow::Result<Dataset> {
    Ok(match (format, src) {
        (DataFormat::Idx, DataSource::Idx { images, labels }) => {
            vaepipe_data::read_idx(&images.path, labels.as_ref().map(|l| l.path.as_path()))?
        }
        (DataFormat::Csv, DataSource::Table { path }) => vaepipe_data::read_csv(&path.path, label_column)?,
        (DataFormat::Parquet, DataSource::Table { path }) => vaepipe_data::read_parquet(&path.path, label_column)?,
        (f, s) => bail!("data source {s:?} does not fit format `{f}`"),
    })
}

fn run(ctx: &Context) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let p: Params = serde_json::from_value(ctx.params.clone()).context("data stage parameters")?;
    let d = &p.data;
    ctx.progress(0, 4, "reading");
    let mut train = read_source(&d.train, d.format, d.label_column.as_deref())?;
    let mut test = read_source(&d.test, d.format, d.label_column.as_deref())?;
    ctx.log(format!("read {} train and {} test rows of {} features in {:.2}s", train.rows, test.rows, train.features, t0.elapsed().as_secs_f64()));
    if train.features != test.features {
        bail!("the train data has {} features but the test data has {}", train.features, test.features);
    }
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
        vaepipe_data::check_unit_interval(&train).context("train data (binarization needs values in [0, 1]; set data.scale = \"max\")")?;
        vaepipe_data::check_unit_interval(&test).context("test data (binarization needs values in [0, 1]; set data.scale = \"max\")")?;
    }
    let n_val = match d.validation {
        Holdout::Rows(n) => n,
        Holdout::Fraction(f) => (f * train.rows as f64).round() as usize,
    };
    if n_val >= train.rows {
        bail!("data.validation holds out {n_val} rows, but the training data has only {} (after train_rows)", train.rows);
    }
    let (mut train, mut validation) = vaepipe_data::split_validation(&train, n_val, seed_for(p.pipeline.seed, "data/validation"))?;
    ctx.progress(2, 4, "binarizing");
    match d.binarize {
        Binarize::None | Binarize::Dynamic => {}
        Binarize::Threshold => {
            for ds in [&mut train, &mut validation, &mut test] {
                vaepipe_data::binarize_threshold(ds, d.threshold as f32);
            }
        }
        Binarize::Static => {
            for (name, ds) in [("train", &mut train), ("validation", &mut validation), ("test", &mut test)] {
                vaepipe_data::binarize_static(ds, seed_for(p.pipeline.seed, &format!("data/static/{name}")))?;
            }
        }
    }
    ctx.progress(3, 4, "writing");
    let mut splits = std::collections::BTreeMap::new();
    for (name, ds) in [("train", &train), ("validation", &validation), ("test", &test)] {
        vaepipe_data::write_dataset(&ctx.out.join(format!("{name}.parquet")), ds)?;
        splits.insert(name.to_string(), vaepipe_data::summary(ds));
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
