//! The model seam: a user-defined network trains, saves and loads back (only with its factory), and the
//! built-in networks are factories that build exactly what `PriorModel::new` builds.

use diem_models::checkpoint::{self, CONFIG_FILE};
use diem_models::{
    Denoiser, Error, MlpConfig, ModelFactory, NetworkConfig, NoiseConditionalNet, PriorModel, TrainConfig,
    Trainer, VeSchedule,
};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// libtorch's generator is process-global: the tests of this file, which seed it, take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `F(u, e) = W2 tanh(W1 [u, e])`, with a dropout that `train` switches.
#[derive(Debug)]
struct Tanh {
    first: nn::Linear,
    second: nn::Linear,
}

impl NoiseConditionalNet for Tanh {
    fn forward_t(&self, u: &Tensor, emb: &Tensor, train: bool) -> Tensor {
        let h = Tensor::cat(&[u.shallow_clone(), emb.to_kind(u.kind())], -1);
        self.second.forward(&self.first.forward(&h).tanh().dropout(0.1, train))
    }

    fn embedding_features(&self) -> i64 {
        4
    }
}

struct TanhFactory(i64);

impl ModelFactory for TanhFactory {
    fn describe(&self) -> NetworkConfig {
        NetworkConfig::custom("tests/tanh", serde_json::json!({ "width": self.0 }))
    }

    fn build(&self, path: &nn::Path) -> diem_models::Result<Box<dyn NoiseConditionalNet>> {
        Ok(Box::new(Tanh {
            first: nn::linear(path / "first", 2 + 4, self.0, Default::default()),
            second: nn::linear(path / "second", self.0, 2, Default::default()),
        }))
    }
}

#[test]
fn a_user_defined_network_trains_saves_and_loads_only_with_its_factory() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(3);
    let mut model = PriorModel::from_factory(&TanhFactory(8), VeSchedule::manifold(), Device::Cpu).unwrap();
    assert_eq!(model.num_parameters(), (6 * 8 + 8) + (8 * 2 + 2));
    let names: Vec<String> = model.named_variables().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["first.bias", "first.weight", "second.bias", "second.weight"]);
    let before: Vec<Tensor> = model.named_variables().into_iter().map(|(_, t)| t.copy()).collect();
    let data = Tensor::randn([64, 2], (Kind::Float, Device::Cpu));
    let config = TrainConfig { steps: 8, batch_size: 16, log_every: 4, ..TrainConfig::manifold() };
    let report = Trainer::new(model.var_store(), config).unwrap().fit(model.denoiser(), &data).unwrap();
    assert_eq!(report.records.len(), 2);
    let after = model.named_variables();
    assert!(before.iter().zip(&after).all(|(b, (_, a))| !b.equal(a)), "training moved every variable");
    model.set_mean(Some(data.mean_dim(0, false, Kind::Float)));

    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(dir.path(), &model, None).unwrap();
    let json = std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap();
    assert!(json.contains("\"custom\"") && json.contains("tests/tanh"), "{json}");

    let err = checkpoint::load(dir.path(), Device::Cpu).unwrap_err();
    assert!(matches!(&err, Error::Config { field, .. } if field == "network.custom"), "{err}");
    let err = checkpoint::load_with(dir.path(), Device::Cpu, &TanhFactory(9)).unwrap_err();
    assert!(matches!(&err, Error::Config { field, .. } if field == "network"), "{err}");

    let (loaded, ema) = checkpoint::load_with(dir.path(), Device::Cpu, &TanhFactory(8)).unwrap();
    assert!(ema.is_none());
    assert_eq!(loaded.config(), model.config());
    for ((na, a), (nb, b)) in model.named_variables().iter().zip(&loaded.named_variables()) {
        assert_eq!(na, nb);
        assert!(a.equal(b), "{na}");
    }
    let x_t = Tensor::randn([5, 2], (Kind::Float, Device::Cpu));
    let sigma = Tensor::from(0.7f32);
    let (a, b) = tch::no_grad(|| (model.denoise(&x_t, &sigma), loaded.denoise(&x_t, &sigma)));
    assert!(a.equal(&b), "evaluation mode: no dropout, the same output");
    assert!(loaded.prior_mean().unwrap().equal(model.mean().unwrap()));
}

#[test]
fn built_in_networks_are_factories_of_the_same_variables() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mlp = MlpConfig { features: 3, hidden: vec![8, 8], embedding_features: 4 };
    tch::manual_seed(11);
    let a = PriorModel::new(NetworkConfig::Mlp(mlp.clone()), VeSchedule::manifold(), Device::Cpu).unwrap();
    tch::manual_seed(11);
    let b = PriorModel::from_factory(&mlp, VeSchedule::manifold(), Device::Cpu).unwrap();
    assert_eq!(a.config(), b.config());
    assert_eq!(a.num_parameters(), mlp.num_parameters());
    for ((na, ta), (nb, tb)) in a.named_variables().iter().zip(&b.named_variables()) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na}");
    }
    let custom = NetworkConfig::custom(" ", serde_json::Value::Null);
    assert!(matches!(custom.validate(), Err(Error::Config { field, .. }) if field == "network.custom.name"));
    assert_eq!(custom.num_parameters(), 0);
    let parsed: NetworkConfig =
        serde_json::from_str(r#"{"custom": {"name": "x", "config": {"k": 1}}}"#).unwrap();
    assert_eq!(parsed, NetworkConfig::custom("x", serde_json::json!({ "k": 1 })));
}
