//! Checkpoints: bit-exact round trip, atomic files, and precise errors for wrong configs and weights.

use std::path::Path;

use diem_models::checkpoint::{self, CONFIG_FILE, EMA_FILE, WEIGHTS_FILE};
use diem_models::{
    Denoiser, Error, MlpConfig, NetworkConfig, PriorModel, TrainConfig, Trainer, UNetConfig, VeSchedule,
};
use tch::{Device, Kind, Tensor};

fn mlp_config() -> NetworkConfig {
    NetworkConfig::Mlp(MlpConfig { features: 3, hidden: vec![16, 8], embedding_features: 8 })
}

fn trained_model(config: NetworkConfig, data: &Tensor) -> (PriorModel, Trainer) {
    let mut model = PriorModel::new(config, VeSchedule::manifold(), Device::Cpu).unwrap();
    let tc = TrainConfig {
        steps: 3,
        batch_size: 4,
        ema_decay: Some(0.5),
        augment: Default::default(),
        ..TrainConfig::cifar(3)
    };
    let mut trainer = Trainer::new(model.var_store(), tc).unwrap();
    trainer.fit(model.denoiser(), data).unwrap();
    let per_sample: Vec<i64> = data.size()[1..].to_vec();
    model.set_mean(Some(Tensor::randn(per_sample, (Kind::Float, Device::Cpu))));
    (model, trainer)
}

fn assert_same_model(a: &PriorModel, b: &PriorModel) {
    let (va, vb) = (a.var_store().variables(), b.var_store().variables());
    assert_eq!(va.len(), vb.len());
    for (name, t) in &va {
        assert!(t.equal(&vb[name]), "variable {name} differs after the round trip");
    }
    assert!(a.denoiser().mean().unwrap().equal(b.denoiser().mean().unwrap()));
    assert_eq!(a.config(), b.config());
    assert_eq!(a.schedule(), b.schedule());
}

#[test]
fn round_trip_is_bit_exact_with_ema_and_mean() {
    tch::manual_seed(0);
    let dir = tempfile::tempdir().unwrap();
    for (i, config) in [
        mlp_config(),
        NetworkConfig::Unet(UNetConfig {
            in_channels: 1,
            out_channels: 1,
            channels: vec![4, 8],
            blocks: vec![1, 1],
            heads: vec![0, 2],
            embedding_features: 8,
            patch_size: 1,
            ..UNetConfig::cifar()
        }),
    ]
    .into_iter()
    .enumerate()
    {
        let data = match &config {
            NetworkConfig::Mlp(_) => Tensor::randn([16, 3], (Kind::Float, Device::Cpu)),
            NetworkConfig::Unet(_) => Tensor::randn([8, 1, 4, 4], (Kind::Float, Device::Cpu)),
            NetworkConfig::Custom(_) => unreachable!("only built-in networks here"),
        };
        let (model, trainer) = trained_model(config, &data);
        let path = dir.path().join(format!("ckpt-{i}"));
        checkpoint::save(&path, &model, trainer.ema()).unwrap();
        for f in [CONFIG_FILE, WEIGHTS_FILE, EMA_FILE] {
            assert!(path.join(f).is_file(), "{f} missing");
        }
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(&path).unwrap().count(), 3);
        let (loaded, ema) = checkpoint::load(&path, Device::Cpu).unwrap();
        assert_same_model(&model, &loaded);
        let (ema, saved) = (ema.unwrap(), trainer.ema().unwrap().tensors());
        assert_eq!(ema.decay(), 0.5);
        for ((n1, t1), (n2, t2)) in ema.tensors().iter().zip(&saved) {
            assert_eq!(n1, n2);
            assert!(t1.equal(t2), "EMA {n1} differs");
        }
        // The EMA differs from the raw weights after training, and the loaded model denoises identically.
        assert!(saved.iter().any(|(n, t)| !t.equal(&model.var_store().variables()[n])));
        let sigma = Tensor::full([data.size()[0]], 0.3, (Kind::Float, Device::Cpu));
        let (a, b) = tch::no_grad(|| {
            (model.denoiser().denoise(&data, &sigma), loaded.denoiser().denoise(&data, &sigma))
        });
        assert!(a.equal(&b));
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(CONFIG_FILE);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn saved_checkpoint(dir: &Path) {
    tch::manual_seed(1);
    let data = Tensor::randn([16, 3], (Kind::Float, Device::Cpu));
    let (model, _) = trained_model(mlp_config(), &data);
    checkpoint::save(dir, &model, None).unwrap();
}

#[test]
fn unknown_config_keys_and_versions_are_rejected_with_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    saved_checkpoint(dir.path());
    edit_config(dir.path(), |v| v["network"]["mlp"]["dropout"] = serde_json::json!(0.1));
    let err = checkpoint::load(dir.path(), Device::Cpu).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Json { .. }), "{msg}");
    assert!(msg.contains("config.json") && msg.contains("unknown field `dropout`"), "{msg}");

    saved_checkpoint(dir.path());
    edit_config(dir.path(), |v| v["extra"] = serde_json::json!(1));
    let msg = checkpoint::load(dir.path(), Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("unknown field `extra`"), "{msg}");

    saved_checkpoint(dir.path());
    edit_config(dir.path(), |v| v["version"] = serde_json::json!(7));
    let err = checkpoint::load(dir.path(), Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Version { found: 7, expected: 1, .. }), "{err}");
    assert!(err.to_string().contains("version"));
}

#[test]
fn wrong_shapes_missing_and_extra_tensors_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    saved_checkpoint(dir.path());
    // The file's first hidden layer has 16 units; a config asking for 17 does not fit it.
    edit_config(dir.path(), |v| v["network"]["mlp"]["hidden"] = serde_json::json!([17, 8]));
    let err = checkpoint::load(dir.path(), Device::Cpu).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Weights { .. }), "{msg}");
    assert!(msg.contains(WEIGHTS_FILE) && msg.contains("hidden.0") && msg.contains("shape"), "{msg}");

    // A weights file with an extra tensor, or without one the model needs.
    saved_checkpoint(dir.path());
    let weights = dir.path().join(WEIGHTS_FILE);
    let mut tensors: Vec<(String, Tensor)> =
        checkpoint::read_safetensors(&weights, Device::Cpu).unwrap().into_iter().collect();
    tensors.push(("stray".into(), Tensor::zeros([2], (Kind::Float, Device::Cpu))));
    std::fs::write(&weights, checkpoint::tensors_to_safetensors(&weights, &tensors).unwrap()).unwrap();
    let msg = checkpoint::load(dir.path(), Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("stray") && msg.contains("unknown tensor"), "{msg}");
    tensors.retain(|(n, _)| n != "stray" && n != "output.bias");
    std::fs::write(&weights, checkpoint::tensors_to_safetensors(&weights, &tensors).unwrap()).unwrap();
    let msg = checkpoint::load(dir.path(), Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("output.bias") && msg.contains("missing"), "{msg}");

    // A missing directory names the config file.
    let msg = checkpoint::load(&dir.path().join("nope"), Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("nope") && msg.contains(CONFIG_FILE), "{msg}");
}
