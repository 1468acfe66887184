//! E-step consistency: posterior samples must agree with their own observations (issue 17).
//!
//! `estep_samples_fit_their_observations` is the regression test: on a reduced manifold problem, a network
//! trained briefly gives MMPS (Tweedie covariance, CG 3, predictor-corrector, as the paper's manifold E-step)
//! a Jacobian that is neither symmetric nor positive semi-definite at large σ; plain CG then sends some samples
//! to |x| ≫ the data's range, while the safeguarded solve keeps every sample consistent.
//! `investigate_estep` (ignored) is the instrument that measured it on a finished demo run.

use std::cell::RefCell;

use diem_em::diagnostics::{estep_consistency, EStepConsistency};
use diem_em::{derive_seed, m_step, posterior_samples, EStepPlan, SeedPurpose};
use diem_manifold::{DataConfig, ManifoldConfig, ManifoldData};
use diem_models::{checkpoint, Denoiser, PriorModel};
use diem_operators::Projection;
use diem_sampling::{Mmps, MmpsConfig, NoiseRng};
use tch::{Device, Kind, Tensor};

/// E-step samples of the reduced manifold problem under `mmps`, with their observations' data.
fn reduced_estep(points: i64, steps: usize, mmps: &[MmpsConfig]) -> (ManifoldData, Vec<Tensor>) {
    reduced_estep_with(ManifoldConfig::demo(), points, steps, mmps)
}

/// [`reduced_estep`] from another configuration (network, sampler).
fn reduced_estep_with(
    mut config: ManifoldConfig,
    points: i64,
    steps: usize,
    mmps: &[MmpsConfig],
) -> (ManifoldData, Vec<Tensor>) {
    config.data = DataConfig::with_points(points);
    let data = ManifoldData::generate(&config.data, 2, Device::Cpu).unwrap();
    tch::manual_seed(0);
    let mut model = PriorModel::new(config.em.network.clone(), config.em.schedule(), Device::Cpu).unwrap();
    model.set_mean(Some(data.truth.mean_dim(0, false, Kind::Float)));
    let mut train = config.em.mstep.clone();
    train.steps = steps;
    train.progress = false;
    m_step(&model, &data.truth, &train, 1, 0).unwrap();
    let sampler = config.em.estep.sampler.build(config.em.schedule()).unwrap();
    let samples = mmps
        .iter()
        .map(|m| {
            let plan = EStepPlan::new(m.clone(), 1).chunk(points).seeded(2, SeedPurpose::EStepChunk, 0);
            posterior_samples(model.denoiser(), &data.observation, sampler.as_ref(), &plan, None).unwrap()
        })
        .collect();
    (data, samples)
}

/// The regression test of issue 17 on the demo's E-step (PC T = 32, MMPS Tweedie + CG 3, σ_y = 0.01,
/// random 2×5 projections) with 1,024 observations and a 3×128 MLP trained 256 steps on the truth. Measured
/// (release): plain CG left 49 rows beyond |x| = 20 (largest 1.1e5) and 39 rows with a residual above 5 noise
/// levels; the safeguarded solve none (largest |x| 6.1, largest ratio 3.1).
#[test]
fn estep_samples_fit_their_observations() {
    let (points, steps) = (1024, 256);
    let guarded =
        ManifoldConfig::demo().em.estep.posterior.mmps().unwrap().to_mmps(&diem_linalg::Dplr::identity(
            5,
            Kind::Float,
            Device::Cpu,
        ));
    let plain = guarded.clone().unguarded();
    let (data, samples) = reduced_estep(points, steps, &[plain, guarded]);
    // Ten times the data's range: every coordinate of the truth spans [−2, 2].
    let bound = 10.0 * data.truth.abs().max().double_value(&[]);
    let before = estep_consistency(&data.observation, &samples[0], bound).unwrap();
    let after = estep_consistency(&data.observation, &samples[1], bound).unwrap();
    eprintln!("plain CG: {}\nsafeguarded: {}", before.summary(), after.summary());
    assert!(before.beyond_bound > 0, "the unguarded solve no longer fails here: {before:?}");
    assert_eq!((after.nonfinite, after.beyond_bound), (0, 0), "{after:?}");
    assert!(after.inconsistent_fraction <= EStepConsistency::WARN_FRACTION, "{after:?}");
    assert!(after.warning().is_none(), "{after:?}");
}

/// The larger configuration of issue 17, reduced (about 9 minutes in release): 8,192 observations, PC
/// T = 256, MMPS Tweedie + CG 3 and the paper's 3×256 MLP, trained 2,048 steps on the truth.
/// `cargo xtask cargo test --release -p diem-manifold --test consistency larger -- --ignored --nocapture`.
///
/// Measured: plain CG left 1,046 rows beyond |x| = 20 (largest 1.1e5) and 1,170 above 5 noise levels; the
/// safeguarded solve none beyond (largest |x| 3.0) but still 494 (6.0 %) above 5 noise levels, with ratios
/// of at most 11. Those moderate misfits are the same with every safeguard variant (fallback `cov_t`,
/// `ones` or `zeros`, damping γ = 1 or 3, either alone), so they are not solve failures; this test checks
/// what the safeguards guarantee and prints the rest.
#[test]
#[ignore = "minutes in release"]
fn larger_configuration_estep_fits_its_observations() {
    let mut config = ManifoldConfig::paper();
    config.em.estep.sampler = diem_em::SamplerSpec::Pc { steps: 256, corrections: 1, tau: 0.1 };
    config.em.mstep.batch_size = 1024;
    let guarded = config.em.estep.posterior.mmps().unwrap().to_mmps(&diem_linalg::Dplr::identity(
        5,
        Kind::Float,
        Device::Cpu,
    ));
    let plain = guarded.clone().unguarded();
    let start = std::time::Instant::now();
    let (data, samples) = reduced_estep_with(config, 8192, 2048, &[plain, guarded]);
    let bound = 10.0 * data.truth.abs().max().double_value(&[]);
    let before = estep_consistency(&data.observation, &samples[0], bound).unwrap();
    let after = estep_consistency(&data.observation, &samples[1], bound).unwrap();
    eprintln!(
        "{:.0} s\nplain CG: {}\nsafeguarded: {}",
        start.elapsed().as_secs_f64(),
        before.summary(),
        after.summary()
    );
    assert_eq!((after.nonfinite, after.beyond_bound), (0, 0), "{after:?}");
    assert!(after.residual_ratio_max < 100.0, "{after:?}");
    assert!(after.inconsistent < before.inconsistent, "{after:?} vs {before:?}");
}

/// The consistency of every lap's E-step samples of a finished demo run (`DIEM_RUN`, default `runs/demo`),
/// against the regenerated observations, with the bound 10 × max |truth| = 20.
#[test]
#[ignore = "needs a finished demo run (DIEM_RUN)"]
fn consistency_of_a_demo_run() {
    let run = std::path::PathBuf::from(std::env::var("DIEM_RUN").unwrap_or_else(|_| "runs/demo".into()));
    let config = ManifoldConfig::demo();
    let data = ManifoldData::generate(&config.data, config.metric.points, Device::Cpu).unwrap();
    let bound = 10.0 * data.truth.abs().max().double_value(&[]);
    for lap in 0..config.em.laps {
        let path = run.join(format!("lap-{lap:03}")).join("samples.npy");
        let Ok(samples) = diem_em::read_npy(&path, Device::Cpu) else { break };
        let c = estep_consistency(&data.observation, &samples, bound).unwrap();
        let outside = samples.abs().amax(&[1i64][..], false).ge(3.0).sum(Kind::Int64).int64_value(&[]);
        eprintln!("lap {lap:2}: outside (−3, 3) {outside:4}; {}", c.summary());
    }
}

/// One denoiser call seen by [`Tracer`]: per row, host vectors.
struct CallRecord {
    /// The call's σ.
    sigma: f64,
    /// max |x_t|.
    xin: Vec<f64>,
    /// max |MMPS output|.
    out: Vec<f64>,
    /// `||y − A x̂|| / (σ_y √2)` of the prior's estimate.
    prior_res: Vec<f64>,
    /// The same of MMPS's output.
    out_res: Vec<f64>,
    /// min eigenvalue of sym(σ² A Jᵀ Aᵀ) in units of σ_y².
    sym_min: Vec<f64>,
    /// first CG curvature <r, M r>/<r, r> (M = σ² A Jᵀ Aᵀ) in units of σ_y².
    curv1: Vec<f64>,
    /// ||M − Mᵀ|| / ||M||.
    asym: Vec<f64>,
    /// ||out − x̂||.
    corr: Vec<f64>,
    /// ||σ² Jᵀ Aᵀ|| (spectral norm bound via Frobenius).
    gain: Vec<f64>,
    /// CG(3) on the explicit K in f64: per iteration, <p, K p> / <p, Σ_y p> (1 + the M-curvature in σ_y²).
    cg_curv: [Vec<f64>; 3],
    /// CG(3): per iteration, the norm of the step's contribution to Δ, α ||σ² Jᵀ Aᵀ p||.
    cg_step: [Vec<f64>; 3],
    /// The damping factor t (1 without an undamped twin).
    t: Vec<f64>,
}

/// Wraps the E-step's MMPS and records, per call and row, the quantities of [`CallRecord`]: the prior's
/// Jacobian is formed explicitly (5 VJPs), so `K = σ_y² I + σ² A Jᵀ Aᵀ` is an explicit 2×2 matrix per row.
struct Tracer<'a> {
    mmps: &'a Mmps<'a>,
    /// The same MMPS without damping (to measure the damping factor t).
    undamped: Option<&'a Mmps<'a>>,
    prior: &'a dyn Denoiser,
    a: Tensor,
    y: Tensor,
    sigma_y: f64,
    records: RefCell<Vec<CallRecord>>,
}

/// A tensor's entries on the host, as f64.
fn host(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

impl Denoiser for Tracer<'_> {
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        let out = self.mmps.denoise(x_t, sigma);
        let s = sigma.to_kind(Kind::Double).double_value(&[]);
        let (n, d) = (x_t.size()[0], x_t.size()[1]);
        let (jac, x_hat) = tch::with_grad(|| {
            let x = x_t.detach().set_requires_grad(true);
            let x_hat = self.prior.denoise(&x, sigma);
            let rows: Vec<Tensor> = (0..d)
                .map(|k| {
                    let e = Tensor::zeros([n, d], (x_hat.kind(), Device::Cpu)).index_fill(
                        1,
                        &Tensor::from_slice(&[k]),
                        1.0,
                    );
                    diem_models::vjp(&x_hat, &x, &e, true).unwrap().to_kind(Kind::Double)
                })
                .collect();
            // jac[n, k, j] = ∂x̂_k/∂x_j
            (Tensor::stack(&rows, 1), x_hat.detach().to_kind(Kind::Double))
        });
        let a = &self.a;
        let y = &self.y;
        let s2 = s * s;
        let sy2 = self.sigma_y * self.sigma_y;
        // M = σ² A Jᵀ Aᵀ  [n, 2, 2]
        let at = a.transpose(1, 2);
        let jt_at = jac.transpose(1, 2).matmul(&at) * s2; // [n, d, 2]
        let m = a.matmul(&jt_at);
        let sym = (&m + m.transpose(1, 2)) * 0.5;
        let eig = sym.linalg_eigvalsh("L");
        let sym_min = eig.select(1, 0) / sy2;
        let r = y - a.matmul(&x_hat.unsqueeze(2)).squeeze_dim(2);
        let mr = m.matmul(&r.unsqueeze(2)).squeeze_dim(2);
        let curv1 = (&r * &mr).sum_dim_intlist(1, false, Kind::Double)
            / r.square().sum_dim_intlist(1, false, Kind::Double)
            / sy2;
        let asym =
            (&m - m.transpose(1, 2)).square().sum_dim_intlist(&[1i64, 2][..], false, Kind::Double).sqrt()
                / m.square().sum_dim_intlist(&[1i64, 2][..], false, Kind::Double).sqrt();
        let gain = jt_at.square().sum_dim_intlist(&[1i64, 2][..], false, Kind::Double).sqrt();
        // CG(3) on K = σ_y² I + M, from v = 0, in f64 (no rejection: the curvature is recorded).
        let k = &m + Tensor::eye(2, (Kind::Double, Device::Cpu)).unsqueeze(0) * sy2;
        let dot = |u: &Tensor, v: &Tensor| (u * v).sum_dim_intlist(1, true, Kind::Double);
        let mut rr = r.shallow_clone();
        let mut p = r.shallow_clone();
        let mut rho = dot(&rr, &rr);
        let mut cg_curv: [Vec<f64>; 3] = Default::default();
        let mut cg_step: [Vec<f64>; 3] = Default::default();
        for it in 0..3 {
            let q = k.matmul(&p.unsqueeze(2)).squeeze_dim(2);
            let pq = dot(&p, &q);
            let alpha = &rho / &pq;
            cg_curv[it] = host(&(&pq / (dot(&p, &p) * sy2)));
            let w = jt_at.matmul(&p.unsqueeze(2)).squeeze_dim(2);
            cg_step[it] = host(&(alpha.abs() * w.square().sum_dim_intlist(1, true, Kind::Double).sqrt()));
            rr = &rr - &alpha * &q;
            let rho_new = dot(&rr, &rr);
            p = &rr + (&rho_new / &rho) * &p;
            rho = rho_new;
        }
        let outd = out.to_kind(Kind::Double);
        let t = match self.undamped {
            Some(u) => {
                let full = u.denoise(x_t, sigma).to_kind(Kind::Double) - &x_hat;
                let got = &outd - &x_hat;
                let num = (&got * &full).sum_dim_intlist(1, false, Kind::Double);
                let den = full.square().sum_dim_intlist(1, false, Kind::Double);
                host(&(num / den).nan_to_num(1.0, 1.0, 1.0))
            }
            None => vec![1.0; n as usize],
        };
        let res = |x: &Tensor| {
            (y - a.matmul(&x.unsqueeze(2)).squeeze_dim(2))
                .square()
                .sum_dim_intlist(1, false, Kind::Double)
                .sqrt()
                / (self.sigma_y * 2f64.sqrt())
        };
        let maxabs = |x: &Tensor| x.abs().amax(&[1i64][..], false);
        self.records.borrow_mut().push(CallRecord {
            sigma: s,
            xin: host(&maxabs(&x_t.to_kind(Kind::Double))),
            out: host(&maxabs(&outd)),
            prior_res: host(&res(&x_hat)),
            out_res: host(&res(&outd)),
            sym_min: host(&sym_min),
            curv1: host(&curv1),
            asym: host(&asym),
            corr: host(&(&outd - &x_hat).square().sum_dim_intlist(1, false, Kind::Double).sqrt()),
            gain: host(&gain),
            cg_curv,
            cg_step,
            t,
        });
        out
    }

    fn prior_mean(&self) -> Option<&Tensor> {
        self.mmps.prior_mean()
    }
}

/// The investigation of issue 17: re-runs one lap's E-step of a finished demo run (bit for bit: same
/// checkpoint, data, seeds) with a tracer around MMPS, and prints where the rows that leave the data range
/// started, their per-call traces and per-σ statistics. `DIEM_RUN=runs/demo DIEM_LAP=0` (and `DIEM_ROWS`);
/// `DIEM_MMPS` = `unguarded` | `fallback` | `damping` | `gmres` | `gmres-damping` replays the lap with other
/// safeguards.
/// `cargo xtask cargo test --release -p diem-manifold --test consistency investigate -- --ignored --nocapture`.
#[test]
#[ignore = "investigation: needs a finished demo run (DIEM_RUN) and a release build"]
fn investigate_estep() {
    let run = std::path::PathBuf::from(std::env::var("DIEM_RUN").unwrap_or_else(|_| "runs/demo".into()));
    let lap: usize = std::env::var("DIEM_LAP").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let rows: i64 = std::env::var("DIEM_ROWS").ok().and_then(|s| s.parse().ok()).unwrap_or(4096);
    let config = ManifoldConfig::demo();
    let data =
        diem_manifold::ManifoldData::generate(&config.data, config.metric.points, Device::Cpu).unwrap();
    let obs = data.observation.narrow(0, rows);
    let dir = run.join(format!("lap-{lap:03}"));
    let (model, _) = checkpoint::load(&dir, Device::Cpu).unwrap();
    let gaussian = diem_em::GaussianPrior::load(&dir.join("gaussian.safetensors"), Device::Cpu).unwrap();
    let mut mmps_config =
        config.em.estep.posterior.mmps().unwrap().to_mmps(&gaussian.cov.to_kind(Kind::Float));
    match std::env::var("DIEM_MMPS").unwrap_or_default().as_str() {
        "unguarded" => mmps_config = mmps_config.unguarded(),
        "fallback" => mmps_config = mmps_config.with_damping(None),
        "damping" => mmps_config = mmps_config.with_fallback(None),
        "gmres" => mmps_config = mmps_config.unguarded().with_solver(diem_sampling::SolverConfig::gmres(3)),
        "gmres-damping" => mmps_config = mmps_config.with_solver(diem_sampling::SolverConfig::gmres(3)),
        _ => {}
    }
    eprintln!("MMPS config: {mmps_config:?}");
    let sampler = config.em.estep.sampler.build(model.schedule()).unwrap();
    let undamped_config = mmps_config.clone().with_damping(None);
    let damping = mmps_config.damping.is_some();
    let mmps = Mmps::from_observation(model.denoiser(), &obs, mmps_config).unwrap();
    let undamped = Mmps::from_observation(model.denoiser(), &obs, undamped_config).unwrap();
    let a = {
        let idx: Vec<i64> = (0..rows).collect();
        let p =
            Projection::random_sphere(config.data.points, 2, 5, config.data.seed.wrapping_add(3)).unwrap();
        p.matrix().index_select(0, &Tensor::from_slice(&idx)).to_kind(Kind::Double)
    };
    let tracer = Tracer {
        mmps: &mmps,
        undamped: damping.then_some(&undamped),
        prior: model.denoiser(),
        a,
        y: obs.y.to_kind(Kind::Double),
        sigma_y: config.data.noise_std,
        records: RefCell::new(Vec::new()),
    };
    let mut rng = NoiseRng::seeded(derive_seed(config.em.seed, SeedPurpose::EStepChunk, lap as u64, 0));
    let x = sampler.sample(&tracer, &[rows, 5], Kind::Float, Device::Cpu, &mut rng).unwrap();
    if rows == 4096 {
        let saved = diem_em::read_npy(&dir.join("samples.npy"), Device::Cpu).unwrap();
        let diff = (&x - &saved).abs().max().double_value(&[]);
        eprintln!("max |x − saved samples| = {diff:e}");
    }
    let records = tracer.records.borrow();
    report_trace(&records, &host(&x.abs().amax(&[1i64][..], false)), &mmps.stats());
}

/// `v ≥ bound` or NaN.
fn beyond(v: f64, bound: f64) -> bool {
    v.is_nan() || v >= bound
}

/// Prints what [`investigate_estep`] measured: a summary, where the rows beyond 20 started, per-row traces
/// of the four worst, and per-σ counts.
fn report_trace(records: &[CallRecord], final_abs: &[f64], stats: &diem_sampling::GuidanceStats) {
    let rows = final_abs.len();
    let last = records.last().expect("at least one call");
    let final_res = &last.out_res;
    let mut sorted = final_res.clone();
    sorted.sort_by(f64::total_cmp);
    let q = |f: f64| sorted[((sorted.len() - 1) as f64 * f) as usize];
    let count = |bound: f64| final_abs.iter().filter(|v| beyond(**v, bound)).count();
    eprintln!(
        "SUMMARY rows {rows}: beyond 20: {}, outside (-3,3): {}, r>5: {}, r median {:.3} p99 {:.3} max {:.3e}, \
         max|x| {:.3e}, stats {stats:?}",
        count(20.0),
        count(3.0),
        final_res.iter().filter(|r| beyond(**r, 5.0 + f64::EPSILON)).count(),
        q(0.5),
        q(0.99),
        q(1.0),
        final_abs.iter().cloned().fold(0.0, f64::max),
    );
    let stage = |c: usize| match c {
        c if c + 1 == records.len() => "final",
        c if c % 2 == 0 => "pred",
        _ => "corr",
    };
    // Onset: the first call whose correction exceeds 20 (10× the data's max |x|), per row beyond 20 at the end.
    let big: Vec<usize> = (0..rows).filter(|&i| beyond(final_abs[i], 20.0)).collect();
    let mut by_stage = std::collections::BTreeMap::<String, usize>::new();
    let mut by_iter = [0usize; 4];
    for &i in &big {
        match (0..records.len()).find(|&c| records[c].corr[i] > 20.0) {
            Some(c) => {
                let rec = &records[c];
                *by_stage.entry(format!("{} σ={:.2}", stage(c), rec.sigma)).or_default() += 1;
                let it = (0..3).max_by(|&a, &b| rec.cg_step[a][i].total_cmp(&rec.cg_step[b][i])).unwrap_or(0);
                by_iter[it] += 1;
                eprintln!(
                    "  row {i:5} onset at call {c} ({}, σ = {:.3}): CG curvature / floor {:10.3e} {:10.3e} \
                     {:10.3e}; largest step {:10.3e}; λmin(sym M)/σ_y² {:10.3e}; asym {:.2}",
                    stage(c),
                    rec.sigma,
                    rec.cg_curv[0][i],
                    rec.cg_curv[1][i],
                    rec.cg_curv[2][i],
                    rec.cg_step[it][i],
                    rec.sym_min[i],
                    rec.asym[i]
                );
            }
            None => by_iter[3] += 1,
        }
    }
    eprintln!("rows beyond 20: {}; onset (first call with ||Δ|| > 20): {by_stage:?}", big.len());
    eprintln!("largest CG step at onset in iteration 1/2/3: {:?} (no onset: {})", &by_iter[..3], by_iter[3]);
    let mut worst: Vec<usize> = (0..rows).filter(|&i| beyond(final_abs[i], 3.0)).collect();
    worst.sort_by(|&i, &j| final_abs[j].total_cmp(&final_abs[i]));
    for &i in worst.iter().take(4) {
        eprintln!("--- row {i}: final |x| = {:e}, final r = {:e}", final_abs[i], final_res[i]);
        eprintln!(
            "call stage  σ        |x_in|     |out|      r(x̂)      r(out)     λmin/σy²   curv1/σy²  asym  \
             ||Δ||      gain"
        );
        for (c, rec) in records.iter().enumerate() {
            if rec.sigma > 3.0 && c + 1 < records.len() && rec.out[i] < 3.0 {
                continue;
            }
            eprintln!(
                "{c:4} {:5} {:8.4} {:10.3e} {:10.3e} {:10.3e} {:10.3e} {:10.3e} {:10.3e} {:5.2} {:10.3e} {:10.3e}",
                stage(c),
                rec.sigma,
                rec.xin[i],
                rec.out[i],
                rec.prior_res[i],
                rec.out_res[i],
                rec.sym_min[i],
                rec.curv1[i],
                rec.asym[i],
                rec.corr[i],
                rec.gain[i]
            );
        }
    }
    eprintln!(
        "σ        rows λmin<0  rows curv1<1  rows |out|>3 from |x_in|<3  median r(out)  damped (median t)"
    );
    for rec in records {
        let n = rec.sym_min.len();
        let neg = rec.sym_min.iter().filter(|v| **v < 0.0).count();
        let tiny = rec.curv1.iter().filter(|v| **v < 1.0).count();
        let jumps = (0..n).filter(|&i| rec.out[i] > 3.0 && rec.xin[i] < 3.0).count();
        let mut r = rec.out_res.clone();
        r.sort_by(f64::total_cmp);
        let mut ts: Vec<f64> = rec.t.iter().cloned().filter(|t| *t < 1.0 - 1e-9).collect();
        ts.sort_by(f64::total_cmp);
        let tmed = ts.get(ts.len() / 2).copied().unwrap_or(1.0);
        eprintln!(
            "{:8.4} {neg:6} {tiny:6} {jumps:6} {:10.3e} {:5} ({tmed:.3})",
            rec.sigma,
            r[n / 2],
            ts.len()
        );
    }
}
