//! Loading one TrueType font for plotters' text, once per process.

use std::path::PathBuf;
use std::sync::OnceLock;

use plotters::style::FontStyle;

/// Environment variable naming a `.ttf` file to use for text.
pub const FONT_VAR: &str = "DIEM_FONT";

const CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

static LOADED: OnceLock<bool> = OnceLock::new();

/// Whether a font is available for text, registering it as plotters' `sans-serif` on first call.
pub fn has_font() -> bool {
    *LOADED.get_or_init(|| {
        let from_env = std::env::var_os(FONT_VAR).map(PathBuf::from);
        from_env.into_iter().chain(CANDIDATES.iter().map(PathBuf::from)).any(|path| {
            let Ok(bytes) = std::fs::read(&path) else { return false };
            // plotters keeps fonts for the whole process; leaking the one file we load is intended.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    })
}
