//! Observe a synthetic image with every operator of `diem-operators`, and write each observation as an
//! `.npz` observation file plus a PNG preview of `y` next to it.
//!
//! Run: `cargo xtask cargo run -p diem-operators --example observe [-- OUT_DIR]` (default
//! `target/observe`). The image is generated in code (colour gradients, discs and stripes in [−1, 1]),
//! so the example needs no data. Each task follows docs/method.md §9b–§9d: random pixel deletion (ρ = 0.75),
//! box inpainting (128² box, 16 px margin), exactly-k deletion (98 %), k-space lines at R = 6 (shown as
//! log-magnitude, plus the zero-filled `Aᵀy`), motion blur (61 × 61, reflect), Gaussian blur,
//! bicubic ×4, average pooling ×4, a random projection of a 32² thumbnail to 1024 values, and blur-then-down-sample.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use diem_operators::{
    Blur, Boundary, Compose, Downsample, KSpace, LinearOperator, Mask, NoiseCov, Observation, Projection,
};
use tch::{Device, Kind, Tensor};

/// The synthetic test image `[1, 3, s, s]` in [−1, 1].
fn test_image(s: i64) -> Tensor {
    let opts = (Kind::Float, Device::Cpu);
    let r = Tensor::arange(s, opts) / (s - 1) as f64;
    let yy = r.view([s, 1]).expand([s, s], false);
    let xx = r.view([1, s]).expand([s, s], false);
    let disc = |cx: f64, cy: f64, rad: f64| {
        ((&xx - cx).square() + (&yy - cy).square()).le(rad * rad).to_kind(Kind::Float)
    };
    let stripes = ((&xx * 40.0).sin().ge(0.0).to_kind(Kind::Float) * yy.ge(0.75).to_kind(Kind::Float)) * 0.8;
    let red = &xx * 0.8 + disc(0.3, 0.35, 0.18) * 0.9 + &stripes;
    let green = &yy * 0.7 + disc(0.65, 0.4, 0.22) * 0.8;
    let blue = (1.0 - &xx) * 0.6 + disc(0.5, 0.7, 0.12) + &stripes;
    (Tensor::stack(&[red, green, blue], 0).clamp(0.0, 1.0) * 2.0 - 1.0).unsqueeze(0)
}

fn main() -> Result<()> {
    let out = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target/observe"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let _guard = tch::no_grad_guard();
    let s = 256;
    let x = test_image(s);
    let shape = [3, s, s];
    write_png(&out.join("x.png"), &to_rgb(&x.get(0), Scale::Symmetric)?)?;

    let gray = x.mean_dim([1i64].as_slice(), true, Kind::Float);
    // The projection acts on a 3 × 32 × 32 thumbnail (a dense [m, d] matrix for 256² would not fit).
    let thumb = Downsample::bicubic(&shape, 8)?.apply(&x);
    let sphere = Projection::random_sphere(1, 1024, 3 * 32 * 32, 0)?;
    let projection = Projection::new(sphere.matrix().shallow_clone(), &[3, 32, 32])?;
    let tasks: Vec<(&str, Box<dyn LinearOperator>, f64, &Tensor)> = vec![
        ("mask_random", Box::new(Mask::random_pixels(1, &shape, 0.75, 0)?), 1e-3, &x),
        ("mask_box", Box::new(Mask::random_box(1, &shape, (128, 128), (16, 16), 0)?), 1e-2, &x),
        ("mask_exact", Box::new(Mask::exact_deletions(1, &shape, 64_225, 0)?), 1e-2, &x),
        ("kspace_r6", Box::new(KSpace::random_lines(1, &[1, s, s], 6.0, 0)?), 1e-2, &gray),
        ("blur_motion", Box::new(Blur::random_motion(1, &shape, 61, 0.5, Boundary::Reflect, 0)?), 0.1, &x),
        ("blur_gaussian", Box::new(Blur::gaussian(&shape, 61, 3.0, Boundary::Reflect)?), 0.05, &x),
        ("bicubic_x4", Box::new(Downsample::bicubic(&shape, 4)?), 0.1, &x),
        ("average_x4", Box::new(Downsample::average(&shape, 4)?), 0.1, &x),
        ("projection_1024", Box::new(projection), 1e-2, &thumb),
        (
            "blur_then_bicubic",
            Box::new(Compose::new(vec![
                Box::new(Blur::gaussian(&shape, 9, 1.5, Boundary::Reflect)?),
                Box::new(Downsample::bicubic(&shape, 4)?),
            ])?),
            0.1,
            &x,
        ),
    ];
    for (name, op, sigma, image) in tasks {
        let kind = op.kind();
        let obs = Observation::simulate(image, op, NoiseCov::isotropic(sigma)?, 1)?;
        let npz = out.join(format!("{name}.npz"));
        obs.save(&npz)?;
        let y = obs.y.get(0);
        let preview = match name {
            "kspace_r6" => {
                let back = obs.operator.adjoint(&obs.y).get(0);
                write_png(&out.join(format!("{name}_adjoint.png")), &to_rgb(&back, Scale::Symmetric)?)?;
                let mag = (y.get(0).square() + y.get(1).square()).sqrt().log1p().unsqueeze(0);
                to_rgb(&mag, Scale::MinMax)?
            }
            "projection_1024" => to_rgb(&y.view([1, 32, 32]), Scale::MinMax)?,
            _ => to_rgb(&y, Scale::Symmetric)?,
        };
        let png = out.join(format!("{name}.png"));
        write_png(&png, &preview)?;
        println!("{name:>18}: {kind:<30} y {:?} -> {} (+ .png)", obs.y.size(), npz.display());
    }
    Ok(())
}

/// How values map to bytes.
#[derive(Clone, Copy)]
enum Scale {
    /// [−1, 1] → [0, 255].
    Symmetric,
    /// [min, max] → [0, 255].
    MinMax,
}

/// `[C, H, W]` (C = 1 or 3) to `(width, height, RGB bytes)`.
fn to_rgb(img: &Tensor, scale: Scale) -> Result<(u32, u32, Vec<u8>)> {
    let img = img.to_kind(Kind::Double);
    let img = match scale {
        Scale::Symmetric => (img + 1.0) / 2.0,
        Scale::MinMax => {
            let (lo, hi) = (img.min().double_value(&[]), img.max().double_value(&[]));
            (img - lo) / (hi - lo).max(1e-12)
        }
    };
    let size = img.size();
    let img = if size[0] == 1 { img.expand([3, size[1], size[2]], false) } else { img };
    let hwc = (img.clamp(0.0, 1.0) * 255.0).round().permute([1, 2, 0]).contiguous().to_kind(Kind::Uint8);
    let bytes = Vec::<u8>::try_from(&hwc.reshape([-1]))?;
    Ok((size[2] as u32, size[1] as u32, bytes))
}

/// A minimal PNG encoder (8-bit RGB, zlib "stored" blocks): no image crate needed for a preview.
fn write_png(path: &Path, (width, height, rgb): &(u32, u32, Vec<u8>)) -> Result<()> {
    let row = *width as usize * 3;
    let mut raw = Vec::with_capacity((row + 1) * *height as usize);
    for r in rgb.chunks(row) {
        raw.push(0); // filter: none
        raw.extend_from_slice(r);
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = b.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + byte as u32) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("{}", path.display()))?);
    file.write_all(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A])?;
    for (kind, data) in [(b"IHDR", &ihdr), (b"IDAT", &z), (b"IEND", &Vec::new())] {
        file.write_all(&(data.len() as u32).to_be_bytes())?;
        file.write_all(kind)?;
        file.write_all(data)?;
        let mut crc_input = kind.to_vec();
        crc_input.extend_from_slice(data);
        file.write_all(&crc32(&crc_input).to_be_bytes())?;
    }
    file.flush()?;
    Ok(())
}

/// CRC-32 (IEEE), as PNG chunks need.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
