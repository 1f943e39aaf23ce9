//! Bad checkpoints never panic, checked at scale (proptest): arbitrary bytes, a valid
//! safetensors file with random byte edits and truncations (mostly in its JSON header), and
//! well-formed headers with arbitrary dtypes, shapes and data offsets are fed to
//! `load_safetensors`, and whatever loads to `Vae::from_named_tensors`. Every call returns a
//! value or an error naming the file; none panics. Case counts are small so that the suite
//! stays fast.

use std::collections::BTreeMap;

use proptest::prelude::*;
use vaepipe_nn::*;

fn config() -> VaeConfig {
    VaeConfig {
        input_dim: 6,
        encoder_hidden: vec![4],
        latent_dim: 2,
        decoder_hidden: vec![3],
        activation: Activation::Tanh,
        likelihood: Likelihood::Bernoulli,
        posterior_std: PosteriorStd::Exp,
        upper: Vec::new(),
    }
}

/// The bytes of a valid checkpoint of a small model, with metadata.
fn valid() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let vae = Vae::<f32>::new(&config(), 1).unwrap();
    let meta: BTreeMap<String, String> = [("vaepipe.model".to_string(), "{}".to_string())].into();
    save_safetensors(&path, &vae.named_tensors(), &meta).unwrap();
    std::fs::read(&path).unwrap()
}

/// Loads `bytes` as a checkpoint and, if that works, as the model; errors name the file.
fn load(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.safetensors");
    std::fs::write(&path, bytes).unwrap();
    match load_safetensors(&path) {
        Ok((tensors, _)) => {
            let _ = Vae::<f32>::from_named_tensors(&config(), &tensors);
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("input.safetensors"), "{text}");
        }
    }
}

fn dtype() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("F32".to_string()),
        1 => proptest::sample::select(vec!["F64", "I64", "U8", "BOOL", "F16", "X"])
            .prop_map(str::to_string),
    ]
}

fn dim() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..8, 1 => any::<u64>()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        load(&bytes);
    }

    #[test]
    fn damaged_files_are_errors_not_panics(
        edits in proptest::collection::vec((0usize..400, any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut b = valid();
        for (pos, val) in edits {
            let i = pos % b.len();
            b[i] = val;
        }
        if let Some(c) = cut {
            b.truncate(c % (b.len() + 1));
        }
        load(&b);
    }

    #[test]
    fn arbitrary_headers_are_errors_not_panics(
        tensors in proptest::collection::vec(
            (
                proptest::sample::select(vec![
                    "encoder.0.weight", "encoder.0.bias", "encoder.mean.weight",
                    "decoder.out.bias", "x",
                ]),
                dtype(),
                proptest::collection::vec(dim(), 0..4),
                (prop_oneof![4 => 0u64..64, 1 => any::<u64>()], prop_oneof![4 => 0u64..64, 1 => any::<u64>()]),
            ),
            0..5,
        ),
        data_len in 0usize..80,
        consistent in proptest::bool::weighted(0.75),
    ) {
        // Mostly consistent headers (offsets that tile the data, as a writer makes them), so
        // that the loader gets past the format checks; otherwise the arbitrary offsets.
        let mut header = serde_json::Map::new();
        let mut end = 0u64;
        for (name, dtype, shape, (a, b)) in tensors {
            let offsets = if consistent {
                let shape: Vec<u64> = shape.iter().map(|d| d % 5).collect();
                let bytes = 4 * shape.iter().product::<u64>();
                let o = [end, end + bytes];
                end += bytes;
                header.insert(
                    name.to_string(),
                    serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": o}),
                );
                continue;
            } else {
                [a, b]
            };
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": offsets}),
            );
        }
        let data_len = if consistent { end as usize } else { data_len };
        let json = serde_json::to_vec(&header).unwrap();
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&json);
        bytes.extend(std::iter::repeat_n(0u8, data_len));
        load(&bytes);
    }
}

#[test]
fn the_unmodified_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    std::fs::write(&path, valid()).unwrap();
    let (tensors, meta) = load_safetensors(&path).unwrap();
    assert_eq!(meta["vaepipe.model"], "{}");
    assert!(Vae::<f32>::from_named_tensors(&config(), &tensors).is_ok());
}
