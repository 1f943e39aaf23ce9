//! Science end to end on the embedded MNIST subset, through the real stages: training reduces
//! the validation bound, and a model trained on the importance-weighted bound L_5 (Burda et al.
//! 2016) has a higher L_5 than the standard VAE trained on the ELBO, evaluated at the same k on
//! the same images and noise — both on the training rows (what was optimized) and on test rows.

use vaepipe_engine::Outcome;
use vaepipe_nn::{Prior, Vae};
use vaepipe_tests::{data_section, run};

/// The comparison starts from Glorot weights and zero output biases (`init = "glorot"`,
/// `output_bias = "init"`, the defaults before issue 13): there the IWAE's lead on L_5 after 6
/// short epochs is 5.4 ± 0.25 nats. From the data-initialised output bias (today's default) both
/// objectives learn so fast that 6 epochs on 3 000 images cannot separate them (measured: 0.32 ±
/// 0.23 nats), which says nothing about the objectives.
fn spec(objective: &str, k: usize) -> String {
    format!(
        "[pipeline]\nname = \"science-{objective}\"\nseed = 3\n{}\n[model]\nlatent = 10\nencoder = [100]\n\
         init = \"glorot\"\noutput_bias = \"init\"\n\
         [train]\nobjective = \"{objective}\"\nk = {k}\nepochs = 6\nbatch_size = 25\n",
        data_section(3000, 500, 300),
    )
}

/// Per-image L_k averaged over `reps` independent noise draws, on one fixed binarization.
fn l_k(vae: &Vae, x: &[f32], rows: usize, k: usize, reps: u64) -> Vec<f64> {
    let mut total = vec![0.0f64; rows];
    for r in 0..reps {
        let mut rng = vaepipe_nn::stream_rng(12, r);
        let lw =
            vaepipe_nn::log_weights(vae, &Prior::StandardNormal, x, rows, k, &mut rng).unwrap();
        for (t, b) in total
            .iter_mut()
            .zip(vaepipe_nn::bound_from_log_weights(&lw, rows, k).unwrap())
        {
            *t += b / reps as f64;
        }
    }
    total
}

/// Mean and standard error of paired differences a − b.
fn paired(a: &[f64], b: &[f64]) -> (f64, f64) {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

fn binarized(x: &[f32], seed: u64) -> Vec<f32> {
    use rand::Rng;
    let mut rng = vaepipe_nn::stream_rng(seed, 0);
    x.iter()
        .map(|p| if rng.r#gen::<f32>() < *p { 1.0 } else { 0.0 })
        .collect()
}

#[test]
fn iwae_training_beats_the_vae_on_l5_and_both_improve() {
    let store = tempfile::tempdir().unwrap();
    let mut models = Vec::new();
    let mut data_dir = None;
    for (objective, k) in [("elbo", 1), ("iwae", 5)] {
        let report = run(store.path(), &spec(objective, k), &[], &["data", "train"]);
        let train = report
            .instances
            .iter()
            .find(|i| i.stage == "train")
            .unwrap();
        assert_eq!(
            train.outcome,
            Outcome::Ran,
            "{objective}: {:?}",
            train.outcome
        );
        let history = vaepipe_data::read_table(&train.dir.join("history.parquet")).unwrap();
        let val = history.f64("validation_bound").unwrap();
        assert!(
            val.last().unwrap() > &(val[0] + 5.0),
            "{objective}: validation bound did not improve: {val:?}"
        );
        let (vae, _) =
            vaepipe_stages::artifacts::load_model(&train.dir.join("model.safetensors")).unwrap();
        models.push(vae);
        data_dir = Some(
            report
                .instances
                .iter()
                .find(|i| i.stage == "data")
                .unwrap()
                .dir
                .clone(),
        );
    }
    let data_dir = data_dir.unwrap();
    for split in ["train", "test"] {
        let d = vaepipe_stages::artifacts::read_split(&data_dir, split).unwrap();
        let x = binarized(&d.x, 11);
        let vae_bound = l_k(&models[0], &x, d.rows, 5, 4);
        let iwae_bound = l_k(&models[1], &x, d.rows, 5, 4);
        let (mean, stderr) = paired(&iwae_bound, &vae_bound);
        eprintln!(
            "{split}: L_5(IWAE k=5) − L_5(VAE) = {mean:.3} ± {stderr:.3} nats over {} images",
            d.rows
        );
        assert!(
            mean > 4.0 * stderr,
            "{split}: the IWAE-trained L_5 is not higher: {mean:.3} ± {stderr:.3}"
        );
    }
}

#[test]
fn without_a_validation_split_no_validation_bound_is_invented() {
    let store = tempfile::tempdir().unwrap();
    let text = format!(
        "[pipeline]\nname = \"noval\"\n{}\n[model]\nlatent = 4\nencoder = [32]\n[train]\nepochs = 2\nbatch_size = 50\n",
        data_section(500, 100, 0)
    );
    let report = run(store.path(), &text, &[], &["data", "train"]);
    let train = report
        .instances
        .iter()
        .find(|i| i.stage == "train")
        .unwrap();
    assert_eq!(train.outcome, Outcome::Ran);
    let history = vaepipe_data::read_table(&train.dir.join("history.parquet")).unwrap();
    assert!(
        history
            .f64("validation_bound")
            .unwrap()
            .iter()
            .all(|v| v.is_nan())
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(train.dir.join("train.json")).unwrap()).unwrap();
    assert!(summary["best_validation_bound"].is_null(), "{summary}");
    assert_eq!(
        summary["best_epoch"], 2,
        "without validation the last epoch is the result"
    );
}
