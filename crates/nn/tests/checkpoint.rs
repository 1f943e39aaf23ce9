//! Checkpoint files: bit-exact round trips with metadata, byte-identical files for equal inputs,
//! atomic replacement, and errors that name the file and tensor for truncated, corrupted,
//! non-safetensors, wrong-dtype, mis-shaped, missing and unexpected tensors.

mod common;

use std::collections::BTreeMap;

use common::*;
use vaepipe_nn::*;

fn model() -> (VaeConfig, Vae<f32>) {
    let cfg = small_cfg(
        Activation::Tanh,
        Likelihood::Gaussian {
            std: 0.3,
            learned: true,
        },
        PosteriorStd::Softplus,
    );
    let vae = Vae::new(&cfg, 42).unwrap();
    (cfg, vae)
}

fn meta() -> BTreeMap<String, String> {
    [
        ("stage", "train"),
        ("objective", "iwae k=5"),
        ("note", "quotes \" and \\ and ünïcode"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn round_trip_is_bit_exact_and_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, vae) = model();
    let mut tensors = vae.named_tensors();
    // Values that a lossy path would change: subnormals, −0, extremes.
    tensors[0].data[0] = f32::MIN_POSITIVE / 3.0;
    tensors[0].data[1] = -0.0;
    tensors[0].data[2] = f32::MAX;
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    save_safetensors(&a, &tensors, &meta()).unwrap();
    save_safetensors(&b, &tensors, &meta()).unwrap();
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "files differ"
    );
    let (back, m) = load_safetensors(&a).unwrap();
    assert_eq!(m, meta());
    let mut sorted = tensors.clone();
    sorted.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(back.len(), sorted.len());
    for (x, y) in back.iter().zip(&sorted) {
        assert_eq!((&x.name, &x.shape), (&y.name, &y.shape));
        let bits = |t: &NamedTensor| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(x), bits(y), "{}", x.name);
    }
    // A model rebuilt from the file has the same named tensors.
    let vae2 = Vae::from_named_tensors(&cfg, &load_safetensors(&b).unwrap().0).unwrap();
    assert_eq!(vae2.named_tensors(), tensors);
    // The file is readable by the safetensors crate itself, and no temporary file is left.
    let bytes = std::fs::read(&a).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), tensors.len());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
}

#[test]
fn overwrite_replaces_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ckpt.safetensors");
    let one = vec![NamedTensor::new("a", vec![2], vec![1.0f32, 2.0]).unwrap()];
    let two = vec![NamedTensor::new("b", vec![1], vec![3.0f32]).unwrap()];
    save_safetensors(&p, &one, &BTreeMap::new()).unwrap();
    save_safetensors(&p, &two, &BTreeMap::new()).unwrap();
    let (back, meta) = load_safetensors(&p).unwrap();
    assert_eq!(back, two);
    assert!(meta.is_empty());
}

#[test]
fn broken_files_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vae) = model();
    let good = dir.path().join("good.safetensors");
    save_safetensors(&good, &vae.named_tensors(), &meta()).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.safetensors", bytes[..bytes.len() - 7].to_vec()),
        ("header-cut.safetensors", bytes[..40].to_vec()),
        ("tiny.safetensors", bytes[..5].to_vec()),
        (
            "text.safetensors",
            b"this is not a checkpoint at all, just some text".to_vec(),
        ),
        ("empty.safetensors", Vec::new()),
        ("garbled-header.safetensors", {
            let mut b = bytes.clone();
            b[8] = b'#';
            b
        }),
    ];
    for (name, content) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        let err = load_safetensors(&p).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(name), "{name}: {msg}");
        assert!(matches!(err, NnError::Checkpoint { .. }), "{name}: {err:?}");
    }
    let missing = dir.path().join("missing.safetensors");
    let err = load_safetensors(&missing).unwrap_err();
    assert!(err.to_string().contains("missing.safetensors"), "{err}");
}

#[test]
fn wrong_dtype_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f64.safetensors");
    let data: Vec<u8> = [1.0f64, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![2], &data).unwrap();
    safetensors::serialize_to_file([("encoder.0.bias", view)], &None, &p).unwrap();
    let err = load_safetensors(&p).unwrap_err().to_string();
    assert!(
        err.contains("f64.safetensors") && err.contains("encoder.0.bias") && err.contains("F64"),
        "{err}"
    );
}

#[test]
fn shape_missing_and_extra_tensors_are_named() {
    let (cfg, vae) = model();
    let good = vae.named_tensors();

    let mut wrong = good.clone();
    let t = wrong
        .iter_mut()
        .find(|t| t.name == "decoder.0.weight")
        .unwrap();
    t.shape = vec![4, 3];
    let err = Vae::from_named_tensors(&cfg, &wrong).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `decoder.0.weight`: expected shape [3, 4], found [4, 3]"
    );

    let missing: Vec<_> = good
        .iter()
        .filter(|t| t.name != "encoder.std_pre.bias")
        .cloned()
        .collect();
    let err = Vae::from_named_tensors(&cfg, &missing).unwrap_err();
    assert!(
        err.to_string()
            .contains("missing tensor `encoder.std_pre.bias`"),
        "{err}"
    );

    let mut extra = good.clone();
    extra.push(NamedTensor::new("decoder.7.weight", vec![1], vec![0.0f32]).unwrap());
    let err = Vae::from_named_tensors(&cfg, &extra).unwrap_err();
    assert!(
        err.to_string()
            .contains("unexpected tensor `decoder.7.weight`"),
        "{err}"
    );

    let mut nan = good.clone();
    nan[3].data[2] = f32::NAN;
    let err = Vae::from_named_tensors(&cfg, &nan).unwrap_err();
    assert!(
        err.to_string().contains(&nan[3].name) && err.to_string().contains("not finite"),
        "{err}"
    );

    let mut dup = good.clone();
    dup.push(good[0].clone());
    let err = Vae::from_named_tensors(&cfg, &dup).unwrap_err();
    assert!(err.to_string().contains("more than once"), "{err}");

    // Tensors of other namespaces (prior, optimizer) are ignored by the model loader.
    let mut with_prior = good.clone();
    with_prior.push(NamedTensor::new("prior.logits", vec![1], vec![0.0f32]).unwrap());
    assert!(Vae::from_named_tensors(&cfg, &with_prior).is_ok());

    // A NamedTensor whose data disagrees with its shape is refused by save.
    let bad = vec![NamedTensor {
        name: "x".into(),
        shape: vec![3],
        data: vec![1.0f32],
    }];
    let dir = tempfile::tempdir().unwrap();
    let err =
        save_safetensors(dir.path().join("bad.safetensors"), &bad, &BTreeMap::new()).unwrap_err();
    assert!(err.to_string().contains("tensor `x`"), "{err}");
}

#[test]
fn named_tensor_layout_is_documented_order() {
    let (_, vae) = model();
    let names: Vec<String> = vae
        .named_tensors()
        .into_iter()
        .map(|t| format!("{}{:?}", t.name, t.shape))
        .collect();
    assert_eq!(
        names,
        [
            "encoder.0.weight[6, 5]",
            "encoder.0.bias[5]",
            "encoder.mean.weight[5, 3]",
            "encoder.mean.bias[3]",
            "encoder.std_pre.weight[5, 3]",
            "encoder.std_pre.bias[3]",
            "decoder.0.weight[3, 4]",
            "decoder.0.bias[4]",
            "decoder.out.weight[4, 6]",
            "decoder.out.bias[6]",
            "decoder.log_std[6]",
        ]
    );
}
