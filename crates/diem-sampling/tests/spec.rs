//! The posterior vocabulary as data: JSON forms (MMPS untagged as in every existing configuration, the
//! baselines tagged), names, validation naming the field, defaults equal to the wrappers' and costs.

use diem_sampling::{
    Covariance, DiffPirConfig, DiffPirSpec, DpsSpec, MmpsConfig, MmpsSpec, PgdmConfig, PosteriorMethod,
    SafeguardSpec, SamplerSpec, SamplingError, SolverSpec, TmpdConfig,
};
use serde_json::json;

fn field(e: SamplingError) -> &'static str {
    match e {
        SamplingError::Config { field, .. } => field,
        other => panic!("not a configuration error: {other}"),
    }
}

#[test]
fn mmps_keeps_its_plain_json_and_the_baselines_are_tagged() {
    let old = json!({"covariance": "tweedie", "solver": {"method": "cg", "iterations": 3}});
    let m: PosteriorMethod = serde_json::from_value(old).unwrap();
    assert_eq!(m, PosteriorMethod::Mmps(MmpsSpec::new(Covariance::Tweedie, SolverSpec::cg(3))));
    assert_eq!(
        serde_json::to_value(m).unwrap(),
        json!({"covariance": "tweedie", "solver": {"method": "cg", "iterations": 3, "rtol": null, "coupled": false},
               "safeguards": {"fallback": "cov_t", "damping": 3.0}})
    );
    for (value, method) in [
        (json!({"dps": {"zeta": 0.5}}), PosteriorMethod::Dps(DpsSpec { zeta: 0.5 })),
        (json!({"dps": {}}), PosteriorMethod::Dps(DpsSpec::default())),
        (json!({"pgdm": {}}), PosteriorMethod::Pgdm(Default::default())),
        (json!({"tmpd": {}}), PosteriorMethod::Tmpd(Default::default())),
        (
            json!({"diffpir": {"lambda": 10.0}}),
            PosteriorMethod::DiffPir(DiffPirSpec { lambda: 10.0, ..Default::default() }),
        ),
    ] {
        let parsed: PosteriorMethod = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(parsed, method, "{value}");
        let back: PosteriorMethod = serde_json::from_value(serde_json::to_value(parsed).unwrap()).unwrap();
        assert_eq!(back, method);
    }
    for bad in [
        json!({"covariance": "tweedie", "solver": {"method": "cg", "iterations": 3}, "dps": {}}),
        json!({"dps": {}, "pgdm": {}}),
        json!({"solver": {"method": "cg", "iterations": 3}}),
        json!({"covariance": "tweedie", "solver": {"method": "cg", "iterations": 3}, "typo": 1}),
        json!({"dps": {"zeta": 1.0, "typo": 1}}),
        json!({}),
    ] {
        assert!(serde_json::from_value::<PosteriorMethod>(bad.clone()).is_err(), "{bad} parsed");
    }
}

#[test]
fn names_round_trip_and_unknown_names_are_refused() {
    for name in PosteriorMethod::NAMES {
        let m = PosteriorMethod::from_name(name, SolverSpec::cg(2)).unwrap();
        assert_eq!(m.name(), name);
        m.validate().unwrap();
    }
    assert_eq!(field(PosteriorMethod::from_name("mmps-cov-y", SolverSpec::cg(1)).unwrap_err()), "method");
    let dps = PosteriorMethod::from_name("dps", SolverSpec::cg(1)).unwrap().with_zeta(0.25);
    assert_eq!(dps, PosteriorMethod::Dps(DpsSpec { zeta: 0.25 }));
    let bare = PosteriorMethod::from_name("mmps", SolverSpec::cg(1)).unwrap().without_safeguards();
    assert_eq!(bare.mmps().unwrap().safeguards, SafeguardSpec::none());
    assert!(SamplerSpec::from_name("ddim", 4).is_ok() && SamplerSpec::from_name("langevin", 4).is_err());
}

#[test]
fn validation_names_the_field() {
    let mmps = |solver, safeguards| {
        PosteriorMethod::Mmps(MmpsSpec { covariance: Covariance::Tweedie, solver, safeguards })
    };
    let cases = [
        (mmps(SolverSpec::cg(0), SafeguardSpec::default()), "solver.iterations"),
        (mmps(SolverSpec { rtol: Some(-1.0), ..SolverSpec::cg(1) }, SafeguardSpec::default()), "solver.rtol"),
        (
            mmps(SolverSpec::cg(1), SafeguardSpec { fallback: Some(Covariance::Tweedie), damping: None }),
            "safeguards.fallback",
        ),
        (mmps(SolverSpec::cg(1), SafeguardSpec { fallback: None, damping: Some(0.5) }), "safeguards.damping"),
        (PosteriorMethod::Dps(DpsSpec { zeta: -1.0 }), "dps.zeta"),
        (PosteriorMethod::DiffPir(DiffPirSpec { lambda: 0.0, ..Default::default() }), "diffpir.lambda"),
        (
            PosteriorMethod::Pgdm(diem_sampling::PgdmSpec { solver: SolverSpec::cg(0) }),
            "pgdm.solver.iterations",
        ),
    ];
    for (method, name) in cases {
        assert_eq!(field(method.validate().unwrap_err()), name, "{method:?}");
    }
    // cov_x without Σ_x is refused by name; with it, it resolves.
    let cov_x = PosteriorMethod::from_name("mmps-cov-x", SolverSpec::cg(1)).unwrap();
    assert!(cov_x.needs_sigma_x());
    assert_eq!(field(cov_x.resolve(None).unwrap_err()), "covariance");
    let sigma = diem_linalg::Dplr::identity(3, tch::Kind::Float, tch::Device::Cpu);
    assert!(cov_x.resolve(Some(&sigma)).is_ok());
    assert_eq!(
        field(SamplerSpec::Pc { steps: 4, corrections: 1, tau: 2.0 }.validate().unwrap_err()),
        "pc.tau"
    );
    assert_eq!(field(SamplerSpec::Ddpm { steps: 0 }.validate().unwrap_err()), "steps");
}

#[test]
fn defaults_equal_the_wrappers_and_costs_follow_section_5_8() {
    let resolved = |m: PosteriorMethod| format!("{:?}", m.resolve(None).unwrap());
    assert_eq!(
        resolved(PosteriorMethod::Pgdm(Default::default())),
        format!("{:?}", diem_sampling::GuidanceConfig::Pgdm(PgdmConfig::default()))
    );
    assert_eq!(
        resolved(PosteriorMethod::Tmpd(Default::default())),
        format!("{:?}", diem_sampling::GuidanceConfig::Tmpd(TmpdConfig::default()))
    );
    assert_eq!(
        resolved(PosteriorMethod::DiffPir(Default::default())),
        format!("{:?}", diem_sampling::GuidanceConfig::DiffPir(DiffPirConfig::default()))
    );
    let mmps3 = PosteriorMethod::from_name("mmps", SolverSpec::cg(3)).unwrap();
    assert_eq!(resolved(mmps3), format!("{:?}", diem_sampling::GuidanceConfig::Mmps(MmpsConfig::cg(3))));
    let vjps = |name: &str| PosteriorMethod::from_name(name, SolverSpec::cg(3)).unwrap().cost_per_call().vjps;
    assert_eq!(["mmps", "mmps-ones", "pgdm", "tmpd", "diffpir", "dps"].map(vjps), [3, 1, 1, 2, 0, 1]);
    let pc = SamplerSpec::Pc { steps: 8, corrections: 2, tau: 0.1 };
    assert_eq!(mmps3.cost_per_step(&pc).vjps, 9);
    assert_eq!(PosteriorMethod::Dps(DpsSpec::default()).cost_per_step(&pc).vjps, 1);
}
