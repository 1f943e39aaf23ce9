//! Build script of the `vaepipe` package: decides whether the SLURM end-to-end tests
//! (tests/slurm*.rs) can run here. It sets `cfg(vaepipe_slurm)` under CI (`CI=true`), when
//! asked (`VAEPIPE_SLURM_TESTS=1`, or `LOCAL_SLURM_INSTALL=1` for tests/slurm/start.sh), or
//! when a SLURM client (`sinfo`) is on PATH. Without it those tests are marked ignored, so
//! `cargo test` lists them as "ignored, needs SLURM …" and counts them in its summary instead
//! of reporting a pass for tests that ran nothing. Under CI they always run (and fail without
//! SLURM). The binary itself does not depend on this.

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(vaepipe_slurm)");
    for var in ["CI", "VAEPIPE_SLURM_TESTS", "LOCAL_SLURM_INSTALL", "PATH"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let set = |var: &str| std::env::var(var).is_ok_and(|v| v == "1" || v == "true");
    let sinfo = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| Path::new(&dir).join("sinfo").is_file())
    });
    if set("CI") || set("VAEPIPE_SLURM_TESTS") || set("LOCAL_SLURM_INSTALL") || sinfo {
        println!("cargo::rustc-cfg=vaepipe_slurm");
    }
}
