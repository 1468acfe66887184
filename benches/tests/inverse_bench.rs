//! The posterior-sampling benchmark (docs/method.md §9d): task construction, the VP wrapper against a direct
//! implementation of docs/method.md §4.6 (unguided, DPS, MMPS, GDM), per-step costs, a truth test with an exact
//! Gaussian prior, and a tiny end-to-end run of the `inverse_bench` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use diem_benches::inverse::{
    sample_batch, save_png, BenchPrior, Method, ScaledDenoiser, Task, TaskGeometry, VpTable,
};
use diem_linalg::{Dplr, Krylov};
use diem_models::{
    checkpoint, Denoiser, GaussianDenoiser, NetworkConfig, PriorModel, UNetConfig, VeSchedule,
};
use diem_operators::{LinearOperator, Observation};
use diem_sampling::{Ddpm, NoiseRng, Sampler, SolverConfig};
use tch::{CModule, Device, Kind, Tensor};

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// The project venv's python (or python3) when it can import torch.
fn python() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("VIRTUAL_ENV")
        .map(|v| PathBuf::from(v).join("bin/python"))
        .into_iter()
        .chain(std::iter::once(PathBuf::from("python3")))
        .collect();
    candidates.into_iter().find(|p| {
        Command::new(p).args(["-c", "import torch"]).output().map(|o| o.status.success()).unwrap_or(false)
    })
}

/// Writes `dir/vp/{model.pt, prior.json}` (a float64 conv ε-net with 6 output channels whose output depends
/// on t) and `dir/lpips.pt` (mean squared difference), or `None` without python.
fn fixtures(dir: &Path) -> Option<()> {
    let Some(py) = python() else {
        eprintln!("skipping: no python with torch (set VIRTUAL_ENV or install python3 + torch)");
        return None;
    };
    let vp = dir.join("vp");
    std::fs::create_dir_all(&vp).unwrap();
    let script = r#"
import sys, torch
out = sys.argv[1]
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
    def forward(self, x, t):
        s = (t.to(x.dtype) / 1000.0).view(-1, 1, 1, 1)
        return torch.tanh(self.conv(x)) * (1.0 + s)
class L(torch.nn.Module):
    def forward(self, x, y):
        return ((x - y) ** 2).mean(dim=(1, 2, 3))
torch.manual_seed(0)
torch.jit.script(Net().double()).save(out + "/vp/model.pt")
torch.jit.script(L()).save(out + "/lpips.pt")
"#;
    // TorchScript needs the classes' source: run the script from a file.
    let path = dir.join("fixtures.py");
    std::fs::write(&path, script).unwrap();
    let status = Command::new(py).arg(&path).arg(dir).status().unwrap();
    assert!(status.success(), "fixture script failed");
    let json = r#"{"kind": "vp-eps", "beta_start": 0.0001, "beta_end": 0.02, "timesteps": 1000, "clip": true, "out_channels": 6}"#;
    std::fs::write(vp.join("prior.json"), json).unwrap();
    Some(())
}

#[test]
fn task_geometry_and_operators() {
    let g = TaskGeometry::for_size(256).unwrap();
    assert_eq!((g.box_side, g.margin, g.kernel, g.deletions, g.sr_factor), (128, 16, 61, 64_225, 4));
    let g32 = TaskGeometry::for_size(32).unwrap();
    assert_eq!((g32.box_side, g32.margin, g32.deletions), (16, 2, 1003));
    assert!(g32.kernel % 2 == 1 && g32.kernel >= 3 && g32.kernel < 32);
    assert!(TaskGeometry::for_size(30).is_err() && TaskGeometry::for_size(8).is_err());
    assert_eq!(Task::Box.sigma_y(), 1.0);
    assert_eq!(Task::Random.sigma_y(), 0.01);

    let params = |op: &dyn LinearOperator, name: &str| {
        op.params().into_iter().find(|(k, _)| k == name).map(|(_, t)| t).unwrap()
    };
    // Box: one 128×128 hole per image, inside the 16-pixel margins.
    let op = Task::Box.operator(6, 256, 0).unwrap();
    let mask = params(op.as_ref(), "mask");
    assert_eq!(mask.size(), vec![6, 1, 256, 256]);
    for b in 0..6 {
        let m = mask.get(b).get(0);
        let holes = m.eq(0.0);
        assert_eq!(holes.sum(Kind::Int64).int64_value(&[]), 128 * 128);
        let rows = holes.any_dim(1, false).nonzero().squeeze_dim(1);
        let cols = holes.any_dim(0, false).nonzero().squeeze_dim(1);
        let (top, left) = (rows.get(0).int64_value(&[]), cols.get(0).int64_value(&[]));
        assert!((16..112).contains(&top) && (16..112).contains(&left), "corner ({top}, {left})");
        assert_eq!(rows.size()[0], 128);
    }
    // Random inpainting: exactly ⌊0.98 · 256²⌋ deleted pixels, shared by the channels.
    let op = Task::Random.operator(2, 256, 0).unwrap();
    let mask = params(op.as_ref(), "mask");
    assert_eq!(mask.size(), vec![2, 1, 256, 256]);
    for b in 0..2 {
        assert_eq!(mask.get(b).eq(0.0).sum(Kind::Int64).int64_value(&[]), 64_225);
    }
    // Motion blur: one 61×61 kernel summing to 1, reflect boundary.
    let op = Task::Motion.operator(3, 256, 0).unwrap();
    let k = params(op.as_ref(), "kernels");
    assert_eq!(k.size(), vec![1, 61, 61]);
    assert!((k.sum(Kind::Double).double_value(&[]) - 1.0).abs() < 1e-5);
    assert!(k.min().double_value(&[]) >= 0.0);
    // SR: 256 → 64.
    let op = Task::Sr4.operator(1, 256, 0).unwrap();
    assert_eq!(op.y_shape(), vec![3, 64, 64]);

    // Measurements: same seed → same y; noise on every entry; the SR display has the image size.
    let x = Tensor::rand([2, 3, 32, 32], (Kind::Double, Device::Cpu)) * 2.0 - 1.0;
    let a = Task::Random.measure(&x, 0).unwrap();
    let b = Task::Random.measure(&x, 0).unwrap();
    assert_eq!(max_abs(&a.y, &b.y), 0.0);
    let masked = a.operator.apply(&x).eq(0.0);
    let noise_std = a.y.masked_select(&masked).std(true).double_value(&[]);
    assert!((noise_std - 0.01).abs() < 0.002, "noise on deleted entries: std {noise_std}");
    let sr = Task::Sr4.measure(&x, 0).unwrap();
    assert_eq!(sr.y.size(), vec![2, 3, 8, 8]);
    assert_eq!(Task::Sr4.display(&sr).size(), vec![2, 3, 32, 32]);
}

#[test]
fn respaced_indices_and_table() {
    let table = VpTable::linear(1e-4, 0.02, 1000).unwrap();
    assert_eq!(table.retained(10).unwrap(), vec![999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
    let r100 = table.retained(100).unwrap();
    assert_eq!((r100[0], r100[98], r100[99]), (999, 10, 0));
    assert_eq!(table.retained(1000).unwrap().len(), 1000);
    assert!(table.retained(1).is_err());
    for i in [0, 10, 500, 999] {
        assert_eq!(table.index_of(table.sigma(i)), i);
    }
    // ᾱ_999 of the linear schedule is about 4.0e-5.
    assert!((table.alpha_bar(999) - 4.04e-5).abs() < 0.1e-5, "{}", table.alpha_bar(999));
}

/// One guidance rule of the direct VP implementation: `(x_in (requires grad), x̂ with graph, ᾱ_t, ᾱ_s, c_t)`
/// → the increment added to the VP state after the step.
type Guide<'a> = dyn Fn(&Tensor, &Tensor, f64, f64, f64) -> Tensor + 'a;

/// docs/method.md §4.6 written directly in VP units: DDIM η = 1 on the retained indices, start `N(0, I)`, no final
/// denoise, `guide` added after each step.
fn direct_vp(
    net: &CModule,
    table: &VpTable,
    steps: usize,
    shape: &[i64],
    seed: u64,
    guide: &Guide,
) -> Tensor {
    let idx = table.retained(steps).unwrap();
    let mut rng = NoiseRng::seeded(seed);
    let mut x = rng.normal(shape, Kind::Double, Device::Cpu);
    for (k, &i) in idx.iter().enumerate() {
        let ab_t = table.alpha_bar(i);
        let ab_s = idx.get(k + 1).map_or(1.0, |&j| table.alpha_bar(j));
        let last = k + 1 == idx.len();
        let x_in = x.detach().set_requires_grad(true);
        let t = Tensor::from_slice(&vec![i as i64; shape[0] as usize]);
        let eps = net.forward_ts(&[&x_in, &t]).unwrap().narrow(1, 0, 3);
        let x0 = ((&x_in - eps * (1.0 - ab_t).sqrt()) / ab_t.sqrt()).clamp(-1.0, 1.0);
        let sig = if last { 0.0 } else { ((1.0 - ab_s) / (1.0 - ab_t)).sqrt() * (1.0 - ab_t / ab_s).sqrt() };
        let x0d = x0.detach();
        let e = (x.detach() - &x0d * ab_t.sqrt()) / (1.0 - ab_t).sqrt();
        let coef = (1.0 - ab_s - sig * sig).max(0.0).sqrt();
        let c_t = ab_s.sqrt() - coef * ab_t.sqrt() / (1.0 - ab_t).sqrt();
        let delta = guide(&x_in, &x0, ab_t, ab_s, c_t);
        let z = rng.normal(shape, Kind::Double, Device::Cpu);
        x = (&x0d * ab_s.sqrt() + e * coef + z * sig + delta).detach();
    }
    x
}

fn vjp(out: &Tensor, input: &Tensor, u: &Tensor) -> Tensor {
    diem_models::vjp(out, input, u, true).unwrap()
}

#[test]
fn vp_wrapper_reproduces_the_direct_vp_sampler() {
    let dir = tempfile::tempdir().unwrap();
    if fixtures(dir.path()).is_none() {
        return;
    }
    let prior = BenchPrior::load(&dir.path().join("vp"), Device::Cpu).unwrap();
    assert!(prior.is_vp());
    assert_eq!(prior.kind, Kind::Double);
    let net = CModule::load(dir.path().join("vp/model.pt")).unwrap();
    let table = VpTable::linear(1e-4, 0.02, 1000).unwrap();
    let steps = 5;
    let shape = [1i64, 3, 16, 16];
    let plan = prior.plan(steps).unwrap();

    // Unguided: diem's DDPM on the respaced σ grid, no final denoise.
    let mut rng = NoiseRng::seeded(3);
    let mut x = plan.draw_initial(prior.denoiser(), &shape, Kind::Double, Device::Cpu, &mut rng).unwrap();
    let ddpm = Ddpm::new(plan.schedule.clone(), plan.grid.clone());
    for (t, s) in plan.grid.pairs() {
        x = tch::no_grad(|| ddpm.step(prior.denoiser(), &x, t, s, &mut rng)).unwrap();
    }
    let direct = direct_vp(&net, &table, steps, &shape, 3, &|x, _, _, _, _| x.zeros_like());
    assert!(max_abs(&x, &direct) < 1e-9, "unguided: {}", max_abs(&x, &direct));

    // Guided: the harness's DPS, MMPS (1) and GDM against their VP definitions (docs/method.md §5.1, §5.3, §5.4).
    let truth = Tensor::rand([1, 3, 16, 16], (Kind::Double, Device::Cpu)) * 1.6 - 0.8;
    let obs: Observation = Task::Box.measure(&truth, 0).unwrap();
    let sy2 = Task::Box.sigma_y().powi(2);
    let op = obs.operator.as_ref();
    let y = obs.y.shallow_clone();
    let seed = 11;

    let dps = |x: &Tensor, x0: &Tensor, ab_t: f64, ab_s: f64, _c: f64| {
        let _ = (ab_t, ab_s);
        let r = &y - op.apply(&x0.detach());
        let norm = r.square().sum(Kind::Double).sqrt();
        let grad = vjp(x0, x, &op.adjoint(&(r / norm)).neg());
        grad * -0.5
    };
    let mmps1 = |x: &Tensor, x0: &Tensor, ab_t: f64, _ab_s: f64, c_t: f64| {
        let gamma = (1.0 - ab_t) / ab_t.sqrt();
        let b = &y - op.apply(&x0.detach());
        let k = |v: &Tensor| v * sy2 + op.apply(&(vjp(x0, x, &op.adjoint(v)) * gamma));
        let kb = k(&b);
        let v = &b * ((&kb * &b).sum(Kind::Double) / kb.square().sum(Kind::Double));
        vjp(x0, x, &op.adjoint(&v)) * (gamma * c_t)
    };
    let gdm = |x: &Tensor, x0: &Tensor, ab_t: f64, ab_s: f64, _c: f64| {
        let r2 = 1.0 - ab_t;
        let b = &y - op.apply(&x0.detach());
        let k = |v: &Tensor| v * sy2 + op.apply(&op.adjoint(v)) * r2;
        let solver = SolverConfig::gmres(5);
        let (v, _) = Krylov::Gmres.solve(k, &b, None, &solver.params()).unwrap();
        vjp(x0, x, &op.adjoint(&v)) * (r2 * (ab_s * ab_t).sqrt())
    };
    let cases: [(Method, &Guide); 3] = [(Method::Dps, &dps), (Method::Mmps(1), &mmps1), (Method::Pgdm, &gdm)];
    for (method, guide) in cases {
        let (x, cost) = sample_batch(&prior, &plan, method, &obs, seed).unwrap();
        let direct = direct_vp(&net, &table, steps, &shape, seed, guide);
        let gap = max_abs(&x, &direct);
        assert!(gap < 1e-8, "{}: gap {gap}", method.name());
        assert_eq!(cost.forwards, steps, "{}", method.name());
        assert_eq!(cost.vjps, steps * method.expected_vjps_per_step(), "{}", method.name());
    }
}

/// A Gaussian prior on `[3, s, s]` images: `N(0, 0.01 I + U Uᵀ)` with two smooth patterns of amplitude 0.3.
fn gaussian_prior(s: i64) -> (GaussianDenoiser, Tensor) {
    let opts = (Kind::Double, Device::Cpu);
    let grid = Tensor::linspace(0.0, std::f64::consts::PI, s, opts);
    let a = grid.sin().unsqueeze(1) * grid.cos().unsqueeze(0);
    let b = (grid * 2.0).cos().unsqueeze(1) * Tensor::ones([s], opts).unsqueeze(0);
    let chan = Tensor::from_slice(&[1.0f64, 0.6, -0.4]).reshape([3, 1, 1]);
    let u =
        Tensor::stack(&[(&a.unsqueeze(0) * &chan).reshape([-1]), (b.unsqueeze(0) * -&chan).reshape([-1])], 1)
            * 0.3;
    let n = 3 * s * s;
    let cov =
        Dplr::new(Tensor::full([n], 0.01, opts), Some(u.shallow_clone()), Some(u.tr().contiguous())).unwrap();
    (GaussianDenoiser::new(Tensor::zeros([n], opts), cov).unwrap(), u)
}

#[test]
fn every_method_has_the_costs_of_spec_5_8_less_mmps_last_vjp() {
    let (den, _) = gaussian_prior(16);
    let prior = BenchPrior::custom(Box::new(den), VeSchedule::default(), Kind::Double, "gaussian");
    let x = Tensor::zeros([2, 3, 16, 16], (Kind::Double, Device::Cpu));
    let obs = Task::Motion.measure(&x, 0).unwrap();
    let plan = prior.plan(3).unwrap();
    for method in [Method::Mmps(1), Method::Mmps(3), Method::Dps, Method::Pgdm, Method::Tmpd, Method::DiffPir]
    {
        let (sample, cost) = sample_batch(&prior, &plan, method, &obs, 0).unwrap();
        assert_eq!(sample.size(), vec![2, 3, 16, 16]);
        assert_eq!(cost.forwards, 3, "{}", method.name());
        assert_eq!(cost.vjps, 3 * method.expected_vjps_per_step(), "{}", method.name());
        assert!(bool::try_from(sample.isfinite().all()).unwrap());
    }
    assert_eq!(Method::Mmps(5).expected_vjps_per_step(), 5);
}

#[test]
fn mmps_samples_the_exact_gaussian_posterior() {
    let s = 32;
    let (den, u) = gaussian_prior(s);
    let n = 3 * s * s;
    let count = 4;
    // Truth drawn from the prior.
    let mut rng = NoiseRng::seeded(5);
    let z = rng.normal(&[count, 2], Kind::Double, Device::Cpu);
    let e = rng.normal(&[count, n], Kind::Double, Device::Cpu);
    let truth = (z.matmul(&u.tr()) + e * 0.1).reshape([count, 3, s, s]);
    let prior = BenchPrior::custom(Box::new(den), VeSchedule::default(), Kind::Double, "gaussian");
    let obs = Task::Random.measure(&truth, 0).unwrap();
    let plan = prior.plan(64).unwrap();
    let (mmps, _) = sample_batch(&prior, &plan, Method::Mmps(5), &obs, 1).unwrap();
    let (dps, _) = sample_batch(&prior, &plan, Method::Dps, &obs, 1).unwrap();

    // Exact posterior per image: Σ_post = Σ − Σ_{:,o} (Σ_{o,o} + σ_y² I)⁻¹ Σ_{o,:} over the observed entries o.
    let sigma = Tensor::eye(n, (Kind::Double, Device::Cpu)) * 0.01 + u.matmul(&u.tr());
    let mask = obs.operator.apply(&Tensor::ones([count, 3, s, s], (Kind::Double, Device::Cpu)));
    let mut expected = 0.0;
    let (mut mse_mmps, mut mse_dps) = (0.0, 0.0);
    for b in 0..count {
        let o = mask.get(b).reshape([-1]).nonzero().squeeze_dim(1);
        let s_o = sigma.index_select(0, &o);
        let s_oo = s_o.index_select(1, &o) + Tensor::eye(o.size()[0], (Kind::Double, Device::Cpu)) * 1e-4;
        let y_o = obs.y.get(b).reshape([-1]).index_select(0, &o);
        let gain = s_o.tr().matmul(&s_oo.inverse());
        let mean = gain.matmul(&y_o.unsqueeze(1)).squeeze_dim(1);
        let post_trace =
            sigma.trace().double_value(&[]) - (&gain * s_o.tr()).sum(Kind::Double).double_value(&[]);
        let x = truth.get(b).reshape([-1]);
        // E||sample − x||² = ||mean − x||² + tr Σ_post for an exact posterior sample.
        expected += ((&mean - &x).square().sum(Kind::Double).double_value(&[]) + post_trace) / n as f64;
        mse_mmps += (mmps.get(b).reshape([-1]) - &x).square().mean(Kind::Double).double_value(&[]);
        mse_dps += (dps.get(b).reshape([-1]) - &x).square().mean(Kind::Double).double_value(&[]);
    }
    let (expected, mse_mmps, mse_dps) =
        (expected / count as f64, mse_mmps / count as f64, mse_dps / count as f64);
    eprintln!("exact posterior sample MSE {expected:.5}, MMPS (5) {mse_mmps:.5}, DPS {mse_dps:.5}");
    assert!((mse_mmps / expected - 1.0).abs() < 0.15, "MMPS {mse_mmps} vs exact {expected}");
    assert!(mse_mmps <= mse_dps * 1.02, "MMPS {mse_mmps} vs DPS {mse_dps}");
}

fn tiny_unet_checkpoint(dir: &Path) {
    let config = UNetConfig {
        in_channels: 3,
        out_channels: 3,
        channels: vec![8, 16],
        blocks: vec![1, 1],
        heads: vec![0, 0],
        kernel_size: 3,
        embedding_features: 16,
        dropout: 0.0,
        patch_size: 1,
    };
    tch::manual_seed(0);
    let model = PriorModel::new(NetworkConfig::Unet(config), VeSchedule::default(), Device::Cpu).unwrap();
    checkpoint::save(dir, &model, None).unwrap();
    let (loaded, _) = checkpoint::load(dir, Device::Cpu).unwrap();
    let x = Tensor::zeros([1, 3, 32, 32], (Kind::Float, Device::Cpu));
    assert_eq!(loaded.denoiser().denoise(&x, &Tensor::from(1.0f32)).size(), vec![1, 3, 32, 32]);
}

fn parse_cell(cell: &str) -> Vec<Option<f64>> {
    cell.split('/').map(|v| v.trim().parse::<f64>().ok()).collect()
}

#[test]
fn tiny_end_to_end_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let with_lpips = fixtures(root).is_some();
    let prior = root.join("prior");
    tiny_unet_checkpoint(&prior);
    let images = root.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for (k, name) in ["b.png", "a.png"].iter().enumerate() {
        let grid = Tensor::linspace(-1.0, 1.0, 32, (Kind::Float, Device::Cpu));
        let img = Tensor::stack(
            &[
                grid.unsqueeze(0).expand([32, 32], false),
                grid.unsqueeze(1).expand([32, 32], false),
                grid.unsqueeze(1).expand([32, 32], false) * (k as f64 - 0.5),
            ],
            0,
        );
        save_png(&img, &images.join(name)).unwrap();
    }
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    let out = root.join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inverse_bench"));
    cmd.args(["--prior", prior.to_str().unwrap(), "--images", images.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap(), "--count", "2", "--size", "32", "--grid", "2"])
        .args(["--tasks", "box,sr4", "--methods", "mmps1,dps,diffpir", "--steps", "2,4"]);
    if with_lpips {
        cmd.args(["--lpips", root.join("lpips.pt").to_str().unwrap()]);
    }
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "inverse_bench failed: {stderr}");
    assert!(!stderr.contains("warning: memory"), "{stderr}");

    for f in
        ["results.csv", "summary.json", "table.md", "cost.md", "grid-box.png", "grid-sr4.png", "log.jsonl"]
    {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2 * 2 * 3 * 2);
    assert!(rows.iter().all(|r| r.starts_with("a.png,0,") || r.starts_with("b.png,1,")));
    assert_eq!(std::fs::read_to_string(out.join("log.jsonl")).unwrap().lines().count(), rows.len());

    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    let measured = table.split("\n## ").next().unwrap();
    let mut cells = 0;
    for line in measured
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| method") && !l.starts_with("| ---"))
    {
        let cols: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cols.len(), 4, "{line}");
        assert!(["MMPS (1)", "DPS", "DiffPIR"].contains(&cols[0]) && ["2", "4"].contains(&cols[1]), "{line}");
        for cell in &cols[2..] {
            let v = parse_cell(cell);
            assert_eq!(v.len(), 3, "{cell}");
            assert_eq!(v[0].is_some(), with_lpips, "{cell}");
            assert!(v.iter().flatten().all(|x| x.is_finite()), "{cell}");
            let (psnr, ssim) = (v[1].unwrap(), v[2].unwrap());
            assert!(psnr > 0.0 && psnr < 100.0 && (-1.0..=1.0).contains(&ssim), "{cell}");
            cells += 1;
        }
    }
    assert_eq!(cells, 3 * 2 * 2);
    assert!(table.contains("| MMPS (5) | 1000 | 0.20 / 20.98 / 0.64 |"), "paper table missing");

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["cells"].as_array().unwrap().len(), 12);
    let costs = summary["costs"].as_array().unwrap();
    let mmps = costs.iter().find(|c| c["method"] == "mmps1").unwrap();
    assert_eq!(mmps["vjps_per_step"].as_f64().unwrap(), 1.0);
    assert_eq!(mmps["forwards_per_step"].as_f64().unwrap(), 1.0);
    assert!(mmps["memory"]["peak_rss_mib"].as_f64().unwrap() > 0.0);
    let cost = std::fs::read_to_string(out.join("cost.md")).unwrap();
    assert!(cost.contains("| MMPS (1) | 1.00 (1) | 1.00 |") && cost.contains("MiB RSS"), "{cost}");
}

#[test]
fn a_scaled_prior_is_the_prior_of_the_rescaled_data() {
    // Data on [−2, 2] with prior N(μ, diag(v)) are, divided by 2, data with prior N(μ/2, diag(v)/4): the
    // wrapped denoiser must be that prior's exact denoiser at the same (x, σ).
    let opts = (Kind::Double, Device::Cpu);
    let mean = Tensor::from_slice(&[0.5f64, -1.0, 1.5, 0.0]);
    let var = Tensor::from_slice(&[0.2f64, 1.0, 0.05, 2.0]);
    let gaussian = |m: &Tensor, v: &Tensor| {
        GaussianDenoiser::new(m.shallow_clone(), Dplr::new(v.shallow_clone(), None, None).unwrap()).unwrap()
    };
    let schedule = VeSchedule::new(1e-3, 1e2).unwrap();
    let scaled = ScaledDenoiser::new(Box::new(gaussian(&mean, &var)), schedule, 2.0).unwrap();
    let exact = gaussian(&(&mean / 2.0), &(&var / 4.0));
    assert!(max_abs(scaled.prior_mean().unwrap(), &(&mean / 2.0)) < 1e-15);
    assert_eq!((scaled.schedule().a, scaled.schedule().b), (5e-4, 50.0));
    let x = Tensor::randn([6, 4], opts);
    for sigma in [0.01, 0.3, 4.0] {
        let s = Tensor::from_slice(&[sigma]).reshape([0i64; 0]);
        let d = max_abs(&scaled.denoise(&x, &s), &exact.denoise(&x, &s));
        assert!(d < 1e-12, "σ = {sigma}: {d}");
    }
    assert!(ScaledDenoiser::new(Box::new(exact), schedule, 0.0).is_err());
}
