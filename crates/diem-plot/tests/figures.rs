//! Every figure kind writes a valid PNG of the expected size, atomically, and bad data is a typed error.

use std::path::Path;

use diem_plot::{corner_plot, image_grid, line_plot, CornerPlot, Image, LinePlot, PlotError, Series};

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG: {}", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

fn no_temporaries(dir: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn line_plot_on_log_axes_with_bands() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curve.png");
    let x: Vec<f64> = (0..10).map(|k| 10f64.powf(k as f64 / 3.0 - 2.0)).collect();
    let y: Vec<f64> = x.iter().map(|v| v * v + 1e-6).collect();
    let lo: Vec<f64> = y.iter().map(|v| v / 2.0).collect();
    let hi: Vec<f64> = y.iter().map(|v| v * 2.0).collect();
    let plot = LinePlot {
        title: "test".into(),
        log_x: true,
        log_y: true,
        series: vec![Series::new("a", x.clone(), y).with_band(lo, hi), Series::new("b", x.clone(), x)],
        size: (640, 480),
        ..LinePlot::default()
    };
    line_plot(&plot, &path).unwrap();
    assert_eq!(png_size(&path), (640, 480));
    no_temporaries(dir.path());
}

#[test]
fn line_plot_rejects_bad_series() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.png");
    let mut plot =
        LinePlot { series: vec![Series::new("a", vec![1.0, 2.0], vec![1.0])], ..LinePlot::default() };
    assert!(matches!(line_plot(&plot, &path), Err(PlotError::Data { .. })));
    plot.series = vec![Series::new("a", vec![1.0, 2.0], vec![0.0, 1.0])];
    plot.log_y = true;
    assert!(matches!(line_plot(&plot, &path), Err(PlotError::Data { .. })), "0 on a log axis");
    plot.log_y = false;
    plot.series = vec![Series::new("a", vec![1.0, f64::NAN], vec![0.0, 1.0])];
    assert!(matches!(line_plot(&plot, &path), Err(PlotError::Data { .. })));
    assert!(!path.exists(), "a failed plot must not leave a file");
}

#[test]
fn corner_plot_size_follows_dimension() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corner.png");
    let d = 3;
    let samples: Vec<f64> = (0..3000).map(|k| ((k * 7919) % 1000) as f64 / 250.0 - 2.0).collect();
    let reference: Vec<f64> = samples.iter().map(|v| v * 0.5).collect();
    let plot = CornerPlot { reference: Some(&reference), cell: 100, ..CornerPlot::new(&samples, d) };
    corner_plot(&plot, &path).unwrap();
    let (w, h) = png_size(&path);
    assert_eq!(w, 300);
    assert!(h == 300 || h == 300 + 40, "{h}");
    no_temporaries(dir.path());
    let ragged = vec![0.0; 10];
    assert!(matches!(corner_plot(&CornerPlot::new(&ragged, 3), &path), Err(PlotError::Data { .. })));
}

#[test]
fn image_grid_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grid.png");
    let image = |v: f32| Image { channels: 3, height: 4, width: 5, data: vec![v; 60] };
    let images: Vec<Image> = (0..5).map(|k| image(k as f32 / 4.0)).collect();
    image_grid(&images, 3, 2, &path).unwrap();
    // 3 columns of (5·2 + 2) px plus a 2 px border; 2 rows of (4·2 + 2) px plus 2.
    assert_eq!(png_size(&path), (3 * 12 + 2, 2 * 10 + 2));
    let odd = Image { channels: 2, height: 4, width: 5, data: vec![0.0; 40] };
    assert!(matches!(image_grid(&[odd], 1, 1, &path), Err(PlotError::Data { .. })));
    let short = Image { channels: 1, height: 4, width: 5, data: vec![0.0; 19] };
    assert!(matches!(image_grid(&[short], 1, 1, &path), Err(PlotError::Data { .. })));
}
