//! U-Net shapes, finiteness, train/eval mode and parameter counts (docs/method.md §9b, §9c).

use diem_models::{Denoiser, EdmDenoiser, NoiseConditionalNet, UNet, UNetConfig};
use tch::{nn, Device, Kind, Tensor};

fn small_cifar() -> UNetConfig {
    UNetConfig {
        channels: vec![8, 16, 24],
        blocks: vec![1, 2, 1],
        heads: vec![0, 4, 0],
        embedding_features: 16,
        ..UNetConfig::cifar()
    }
}

fn small_mri() -> UNetConfig {
    UNetConfig {
        channels: vec![8, 16, 16, 32],
        blocks: vec![1, 1, 1, 1],
        heads: vec![0, 0, 0, 2],
        embedding_features: 16,
        ..UNetConfig::mri()
    }
}

fn count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}

#[test]
fn cifar_like_unet_keeps_shape_and_is_finite() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = UNet::new(&vs.root(), &small_cifar()).unwrap();
    let d = EdmDenoiser::new(net).unwrap();
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    d.net().check_input(&x.size()).unwrap();
    let sigma = Tensor::from_slice(&[0.01f32, 50.0]);
    let y = tch::no_grad(|| d.denoise(&x, &sigma));
    assert_eq!(y.size(), x.size());
    assert!(bool::try_from(y.isfinite().all()).unwrap());
    // Eval mode is deterministic; train mode (dropout 0.1) is not.
    let y2 = tch::no_grad(|| d.denoise(&x, &sigma));
    assert!(y.equal(&y2));
    let emb = Tensor::randn([2, 16], (Kind::Float, Device::Cpu));
    let a = tch::no_grad(|| d.net().forward_t(&x, &emb, true));
    let b = tch::no_grad(|| d.net().forward_t(&x, &emb, true));
    assert!(!a.equal(&b), "dropout should make two training passes differ");
}

#[test]
fn mri_like_unet_uses_space_to_depth() {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = small_mri();
    assert_eq!(cfg.size_multiple(), 32);
    let net = UNet::new(&vs.root(), &cfg).unwrap();
    let x = Tensor::randn([1, 1, 64, 64], (Kind::Float, Device::Cpu));
    net.check_input(&x.size()).unwrap();
    assert!(net.check_input(&[1, 1, 48, 64]).is_err());
    assert!(net.check_input(&[1, 2, 64, 64]).is_err());
    let emb = Tensor::randn([1, 16], (Kind::Float, Device::Cpu));
    let y = tch::no_grad(|| net.forward_t(&x, &emb, false));
    assert_eq!(y.size(), vec![1, 1, 64, 64]);
    assert!(bool::try_from(y.isfinite().all()).unwrap());
    // The first convolution sees 16 channels (1 channel × 4 × 4 patches).
    let w = vs.variables()["levels.0.down.weight"].size();
    assert_eq!(w, vec![8, 16, 3, 3]);
}

#[test]
fn analytic_parameter_count_matches_the_variables() {
    for cfg in [small_cifar(), small_mri(), UNetConfig { kernel_size: 5, ..small_cifar() }] {
        let vs = nn::VarStore::new(Device::Cpu);
        UNet::new(&vs.root(), &cfg).unwrap();
        assert_eq!(count(&vs), cfg.num_parameters(), "{cfg:?}");
    }
}

#[test]
fn the_one_line_description_names_the_architecture() {
    assert_eq!(
        UNetConfig::cifar().to_string(),
        "U-Net, channels [128, 256, 384], blocks [5, 5, 5], heads [0, 4, 0], E = 256, dropout 0.1 \
         (57560451 parameters)"
    );
    assert!(UNetConfig::mri()
        .to_string()
        .starts_with("U-Net, space-to-depth 4, channels [128, 256, 384, 512]"));
}

/// The paper's configurations: the counts documented on [`UNetConfig::cifar`] and [`UNetConfig::mri`],
/// from the variables of the full-size networks built on the CPU (about a second).
#[test]
fn paper_configurations_have_the_documented_parameter_counts() {
    for (cfg, documented) in [(UNetConfig::cifar(), 57_560_451), (UNetConfig::mri(), 77_648_912)] {
        let vs = nn::VarStore::new(Device::Cpu);
        UNet::new(&vs.root(), &cfg).unwrap();
        assert_eq!(count(&vs), documented);
        assert_eq!(cfg.num_parameters(), documented);
    }
}

#[test]
fn invalid_configurations_are_rejected() {
    let vs = nn::VarStore::new(Device::Cpu);
    let bad_heads = UNetConfig { heads: vec![0, 3, 0], ..small_cifar() };
    let err = UNet::new(&vs.root(), &bad_heads).unwrap_err().to_string();
    assert!(err.contains("unet.heads[1]"), "{err}");
    let bad_len = UNetConfig { blocks: vec![1, 1], ..small_cifar() };
    assert!(UNet::new(&vs.root(), &bad_len).unwrap_err().to_string().contains("unet.blocks"));
    let bad_kernel = UNetConfig { kernel_size: 4, ..small_cifar() };
    assert!(UNet::new(&vs.root(), &bad_kernel).is_err());
}
