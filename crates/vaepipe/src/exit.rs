//! The exit codes of `vaepipe` (docs/cli.md): 0 success · 1 a stage failed · 2 invalid spec or
//! usage · 3 interrupted (a checkpoint was saved; running the same command again resumes).

/// A stage (or the engine) failed.
pub const EXIT_FAILED: u8 = 1;
/// The spec or the command line is invalid.
pub const EXIT_INVALID: u8 = 2;
/// Stopped by a signal after saving checkpoints.
pub const EXIT_INTERRUPTED: u8 = 3;
