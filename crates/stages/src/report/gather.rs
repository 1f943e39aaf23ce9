//! Reading the upstream artifacts: which stage instance serves which point, and what each
//! output holds (every failure becomes a noted problem, never an error).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::anyhow;
use serde::Deserialize;
use serde_json::Value;
use vaepipe_data::Table;
use vaepipe_engine::{Context, Input, Manifest};

use crate::artifacts::{
    DataSummary, Estimates, EvaluatedVariant, RefitSummary, TestSplit, TrainOutcome, Variant,
};

use super::UPSTREAM;

// ---------------------------------------------------------------------------------------------
// What is read from the artifacts

/// The data stage's `summary.json`, as far as the report needs it.
pub(super) struct DataArt {
    /// (channels, height, width); `[h, w]` in summary.json is one channel.
    pub(super) image_shape: Option<(usize, usize, usize)>,
    /// `test_split` of summary.json (a held-out test split of the training source).
    pub(super) test_split: Option<TestSplit>,
    pub(super) features: Option<u64>,
    pub(super) rows: BTreeMap<String, u64>,
}

/// One epoch of `history.parquet` / `finetune_history.parquet`.
pub(super) struct Epoch {
    pub(super) epoch: f64,
    pub(super) train: f64,
    pub(super) validation: f64,
}

pub(super) struct TrainArt {
    /// `train.json` (how training went).
    pub(super) json: Option<TrainOutcome>,
    pub(super) history: Vec<Epoch>,
}

pub(super) struct PriorArt {
    pub(super) refit: Option<RefitSummary>,
    /// `latent_samples.parquet`: (source, z1, z2).
    pub(super) samples: Vec<(String, f64, f64)>,
    pub(super) finetune: Vec<Epoch>,
    /// `variants.json` entries (to tell which variants share a model).
    pub(super) variants: Vec<Variant>,
}

pub(super) struct EvalVariant {
    pub(super) name: String,
    pub(super) label: String,
    /// `metrics.json` (its estimates).
    pub(super) metrics: Option<Estimates>,
    /// `per_image.parquet`: (index in the test source, NLL).
    pub(super) nll: Vec<(i64, f64)>,
    /// `lk_curve.parquet`: (k, mean L_k, stderr).
    pub(super) curve: Vec<(f64, f64, f64)>,
    /// Images the L_k curve averages over.
    pub(super) curve_images: Option<i64>,
    /// `units.parquet`: (variance, active).
    pub(super) units: Vec<(f64, bool)>,
    pub(super) samples: Vec<Vec<f32>>,
    /// (original, reconstruction) pairs.
    pub(super) reconstructions: Vec<(Vec<f32>, Vec<f32>)>,
    /// (x, y, label).
    pub(super) latents: Vec<(f64, f64, i64)>,
}

pub(super) struct EvalArt {
    pub(super) variants: Vec<EvalVariant>,
}

/// One sweep point (as the parameters list it) with the keys of the stage instances that
/// produced its artifacts.
#[derive(Deserialize)]
pub(super) struct PointRun {
    pub(super) index: usize,
    pub(super) id: String,
    pub(super) label: String,
    pub(super) config: Value,
    /// Upstream stage → key of the instance serving this point.
    #[serde(skip)]
    pub(super) keys: BTreeMap<&'static str, String>,
    /// Why a stage has no output for this point (from `ctx.missing`).
    #[serde(skip)]
    pub(super) missing: Vec<(String, String)>,
}

impl PointRun {
    /// The label for tables and legends: the sweep label, or "run" without a sweep.
    pub(super) fn name(&self) -> String {
        if self.label.is_empty() {
            "run".to_string()
        } else {
            self.label.clone()
        }
    }
    /// Stable file-name part.
    pub(super) fn stem(&self) -> String {
        format!("p{}", self.index)
    }
    pub(super) fn cfg(&self, path: &str) -> Option<&Value> {
        path.split('.').try_fold(&self.config, |v, p| v.get(p))
    }
    /// The point's value of a swept key.
    pub(super) fn cfg_swept(&self, key: &str) -> Option<&Value> {
        match self.cfg("point.values") {
            Some(Value::Object(m)) => m.get(key),
            _ => None,
        }
    }
    pub(super) fn swept(&self) -> BTreeMap<String, Value> {
        match self.cfg("point.values") {
            Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => BTreeMap::new(),
        }
    }
}

/// Everything read, keyed by stage instance.
#[derive(Default)]
pub(super) struct Gathered {
    pub(super) data: BTreeMap<String, DataArt>,
    pub(super) train: BTreeMap<String, TrainArt>,
    pub(super) prior: BTreeMap<String, PriorArt>,
    pub(super) eval: BTreeMap<String, EvalArt>,
    pub(super) manifests: Vec<(String, Manifest)>,
    /// Problems met while reading, for the report's last section.
    pub(super) problems: Vec<String>,
}

impl Gathered {
    pub(super) fn data_of(&self, p: &PointRun) -> Option<&DataArt> {
        p.keys.get("data").and_then(|k| self.data.get(k))
    }
    pub(super) fn train_of(&self, p: &PointRun) -> Option<&TrainArt> {
        p.keys.get("train").and_then(|k| self.train.get(k))
    }
    pub(super) fn prior_of(&self, p: &PointRun) -> Option<&PriorArt> {
        p.keys.get("prior").and_then(|k| self.prior.get(k))
    }
    pub(super) fn eval_of(&self, p: &PointRun) -> Option<&EvalArt> {
        p.keys.get("eval").and_then(|k| self.eval.get(k))
    }
}

/// Inputs in pipeline order (data, train, prior, eval), then by the first point they serve.
pub(super) fn ordered_inputs(inputs: &[Input]) -> Vec<&Input> {
    let mut v: Vec<&Input> = inputs.iter().collect();
    v.sort_by(|a, b| {
        let first = |i: &Input| i.points.iter().map(|p| p.index).min().unwrap_or(usize::MAX);
        (stage_rank(&a.stage), first(a), &a.key).cmp(&(stage_rank(&b.stage), first(b), &b.key))
    });
    v
}

/// Position of `stage` in pipeline order ([`UPSTREAM`]); other stages come last.
pub(super) fn stage_rank(stage: &str) -> usize {
    UPSTREAM
        .iter()
        .position(|u| *u == stage)
        .unwrap_or(UPSTREAM.len())
}

/// Assigns each point the upstream instance of each stage that serves it (through the inputs'
/// `points` lists), and the reasons of missing ones. An input whose recorded points name none of
/// this pipeline's points (an output reused from another pipeline and re-read from its manifest,
/// as `vaepipe report <store dir>` does) serves every point when it is the only one of its stage.
pub(super) fn associate(ctx: &Context, points: &mut [PointRun]) {
    let ids: BTreeSet<String> = points.iter().map(|p| p.id.clone()).collect();
    for stage in UPSTREAM {
        let of_stage: Vec<&Input> = ctx.inputs.iter().filter(|i| i.stage == stage).collect();
        let foreign = of_stage.len() == 1
            && !of_stage[0].points.iter().any(|p| ids.contains(&p.id))
            && !ctx.missing.iter().any(|m| m.stage == stage);
        for p in points.iter_mut() {
            let own = of_stage
                .iter()
                .find(|i| i.points.iter().any(|r| r.id == p.id));
            if let Some(i) = own.or(if foreign { of_stage.first() } else { None }) {
                p.keys.insert(stage, i.key.clone());
            }
        }
    }
    for m in ctx.missing {
        for p in points
            .iter_mut()
            .filter(|p| m.points.iter().any(|r| r.id == p.id))
        {
            p.missing.push((m.stage.clone(), m.reason.clone()));
        }
    }
}

/// Reads one upstream output; every failure becomes a noted problem, never an error.
pub(super) fn load_input(input: &Input, g: &mut Gathered) {
    let dir = &input.dir;
    let name = format!("{}/{}", input.stage, input.key);
    let mut problems = Vec::new();
    // Error messages name files relative to the store entry, not by absolute path.
    let mut note = |e: anyhow::Error| {
        let msg = format!("{e:#}").replace(&dir.display().to_string(), &name);
        problems.push(msg);
    };
    match read_manifest(dir) {
        Ok(m) => g.manifests.push((input.stage.clone(), m)),
        Err(e) => note(e),
    }
    match input.stage.as_str() {
        "data" => {
            if let Some(art) = ok(read_data(dir), &mut note) {
                g.data.insert(input.key.clone(), art);
            }
        }
        "train" => {
            let art = TrainArt {
                json: ok(
                    crate::read_json::<TrainOutcome>(&dir.join("train.json")),
                    &mut note,
                ),
                history: ok(read_history(&dir.join("history.parquet")), &mut note)
                    .unwrap_or_default(),
            };
            g.train.insert(input.key.clone(), art);
        }
        "prior" => {
            let art = read_prior(dir, &mut note);
            g.prior.insert(input.key.clone(), art);
        }
        "eval" => {
            let art = read_eval(dir, &mut note);
            g.eval.insert(input.key.clone(), art);
        }
        _ => {}
    }
    g.problems.extend(problems);
}

pub(super) fn ok<T>(r: anyhow::Result<T>, note: &mut impl FnMut(anyhow::Error)) -> Option<T> {
    r.map_err(note).ok()
}

pub(super) fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    crate::read_json::<Manifest>(&dir.join("manifest.json"))
}

pub(super) fn read_data(dir: &Path) -> anyhow::Result<DataArt> {
    let path = dir.join("summary.json");
    let summary: DataSummary = crate::read_json(&path)?;
    let image_shape = match summary.image_shape.as_deref() {
        None => None,
        Some(&[h, w]) if h > 0 && w > 0 => Some((1, h, w)),
        Some(&[c, h, w]) if c > 0 && h > 0 && w > 0 => Some((c, h, w)),
        Some(s) => {
            return Err(anyhow!(
                "{}: `image_shape` must be [h, w], [c, h, w] or null, found {s:?}",
                path.display()
            ));
        }
    };
    let rows = summary
        .splits
        .iter()
        .map(|(k, s)| (k.clone(), s.rows as u64))
        .collect();
    Ok(DataArt {
        image_shape,
        test_split: summary.test_split,
        features: Some(summary.features as u64),
        rows,
    })
}

pub(super) fn read_history(path: &Path) -> anyhow::Result<Vec<Epoch>> {
    let t = vaepipe_data::read_table(path)?;
    let epoch = t.i64("epoch")?;
    let train = t.f64("train_bound")?;
    let validation = t.f64("validation_bound")?;
    Ok((0..t.rows())
        .map(|i| Epoch {
            epoch: epoch[i] as f64,
            train: train[i],
            validation: validation[i],
        })
        .collect())
}

pub(super) fn read_prior(dir: &Path, note: &mut impl FnMut(anyhow::Error)) -> PriorArt {
    let refit = ok(
        crate::read_json::<RefitSummary>(&dir.join("refit.json")),
        note,
    );
    let variants = ok(
        crate::read_json::<Vec<Variant>>(&dir.join("variants.json")),
        note,
    )
    .unwrap_or_default();
    let samples = if dir.join("latent_samples.parquet").is_file() {
        ok(
            read_latent_samples(&dir.join("latent_samples.parquet")),
            note,
        )
        .unwrap_or_default()
    } else {
        Vec::new()
    };
    let finetune_path = dir.join("finetune_history.parquet");
    let finetune = if finetune_path.is_file() {
        ok(read_history(&finetune_path), note).unwrap_or_default()
    } else {
        Vec::new()
    };
    PriorArt {
        refit,
        samples,
        finetune,
        variants,
    }
}

pub(super) fn read_latent_samples(path: &Path) -> anyhow::Result<Vec<(String, f64, f64)>> {
    let t = vaepipe_data::read_table(path)?;
    let (s, x, y) = (t.str("source")?, t.f64("z1")?, t.f64("z2")?);
    Ok((0..t.rows()).map(|i| (s[i].clone(), x[i], y[i])).collect())
}

/// Reads the eval stage's `variants.json` and each variant's directory.
pub(super) fn read_eval(dir: &Path, note: &mut impl FnMut(anyhow::Error)) -> EvalArt {
    let path = dir.join("variants.json");
    let Some(list) = ok(crate::read_json::<Value>(&path), note) else {
        return EvalArt {
            variants: Vec::new(),
        };
    };
    let Some(list) = list.as_array() else {
        note(anyhow!("{}: expected a list of variants", path.display()));
        return EvalArt {
            variants: Vec::new(),
        };
    };
    let mut variants = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let v: EvaluatedVariant = match serde_json::from_value(v.clone()) {
            Ok(v) => v,
            Err(e) => {
                note(anyhow!("{}: variant {i}: {e}", path.display()));
                continue;
            }
        };
        let name = v.name.as_str();
        let sub = if v.directory.is_empty() {
            name
        } else {
            v.directory.as_str()
        };
        // A directory name from a file: only a plain relative name inside the entry is followed.
        if sub.is_empty() || sub.contains(['/', '\\']) || sub == "." || sub == ".." {
            note(anyhow!(
                "{}: variant `{name}`: directory `{sub}` is not a plain name",
                path.display()
            ));
            continue;
        }
        let vdir = dir.join(sub);
        let label = if v.label.is_empty() {
            name.to_string()
        } else {
            v.label.clone()
        };
        variants.push(read_variant(&vdir, name, label, note));
    }
    EvalArt { variants }
}

pub(super) fn read_variant(
    dir: &Path,
    name: &str,
    label: String,
    note: &mut impl FnMut(anyhow::Error),
) -> EvalVariant {
    let metrics = ok(
        crate::read_json::<Estimates>(&dir.join("metrics.json")),
        note,
    );
    let nll = read_part(dir, "per_image.parquet", note, |t| {
        let (i, n) = (t.i64("index")?, t.f64("nll")?);
        Ok(i.iter().copied().zip(n.iter().copied()).collect())
    });
    let curve = read_part(dir, "lk_curve.parquet", note, |t| {
        let (k, b, s) = (t.i64("k")?, t.f64("bound")?, t.f64("stderr")?);
        let images = t.i64("images").ok().and_then(|n| n.iter().copied().max());
        Ok((
            (0..t.rows())
                .map(|i| (k[i] as f64, b[i], s[i]))
                .collect::<Vec<_>>(),
            images,
        ))
    });
    let (curve, curve_images) = curve.unwrap_or_default();
    let units = read_part(dir, "units.parquet", note, |t| {
        let (v, a) = (t.f64("variance")?, t.bool("active")?);
        Ok(v.iter().copied().zip(a.iter().copied()).collect())
    });
    let samples = read_part(dir, "samples.parquet", note, pixel_rows);
    let reconstructions = read_part(dir, "reconstructions.parquet", note, read_reconstructions);
    let latents = read_part(dir, "latents.parquet", note, |t| {
        let (x, y, l) = (t.f64("x")?, t.f64("y")?, t.i64("label")?);
        Ok((0..t.rows()).map(|i| (x[i], y[i], l[i])).collect())
    });
    EvalVariant {
        name: name.to_string(),
        label,
        metrics,
        nll: nll.unwrap_or_default(),
        curve,
        curve_images,
        units: units.unwrap_or_default(),
        samples: samples.unwrap_or_default(),
        reconstructions: reconstructions.unwrap_or_default(),
        latents: latents.unwrap_or_default(),
    }
}

/// Reads table `file` of `dir` and extracts something from it; failures are noted.
pub(super) fn read_part<T>(
    dir: &Path,
    file: &str,
    note: &mut impl FnMut(anyhow::Error),
    extract: impl FnOnce(&Table) -> anyhow::Result<T>,
) -> Option<T> {
    let t = ok(
        vaepipe_data::read_table(&dir.join(file)).map_err(anyhow::Error::from),
        note,
    )?;
    ok(extract(&t), note)
}

/// The pixel columns (`p0000`, `p0001`, …) of a table, in numeric order, as one image per row.
pub(super) fn pixel_rows(t: &Table) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut cols: Vec<(usize, &str)> = t
        .names()
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix('p')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse().ok())
                .map(|i| (i, n))
        })
        .collect();
    cols.sort();
    if cols.is_empty() {
        return Err(anyhow!(
            "{}: no pixel columns (p0000, …)",
            t.source()
                .map_or("table".into(), |p| p.display().to_string())
        ));
    }
    let data: Vec<&[f64]> = cols
        .iter()
        .map(|(_, n)| t.f64(n))
        .collect::<Result<_, _>>()?;
    Ok((0..t.rows())
        .map(|r| data.iter().map(|c| c[r] as f32).collect())
        .collect())
}

pub(super) fn read_reconstructions(t: &Table) -> anyhow::Result<Vec<(Vec<f32>, Vec<f32>)>> {
    let image = t.i64("image")?;
    let kind = t.str("kind")?;
    let pixels = pixel_rows(t)?;
    let mut by_image: BTreeMap<i64, (Option<usize>, Option<usize>)> = BTreeMap::new();
    for r in 0..t.rows() {
        let e = by_image.entry(image[r]).or_default();
        match kind[r].as_str() {
            "original" => e.0 = Some(r),
            "reconstruction" => e.1 = Some(r),
            _ => {}
        }
    }
    Ok(by_image
        .into_values()
        .filter_map(|(o, r)| Some((pixels[o?].clone(), pixels[r?].clone())))
        .collect())
}
