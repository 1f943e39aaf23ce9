//! Quoting for the generated batch scripts. Every value that comes from a spec, a flag or the
//! file system reaches bash only through [`shell_quote`], which turns any byte string into one
//! bash word that expands to exactly those bytes and never spans a line (control bytes are
//! written as `$'\xHH'` escapes). `#SBATCH` lines never receive such values: sbatch parses
//! them with its own rules (no newlines, `#` starts a comment, `%` is a file-name pattern), so
//! the few values placed there are checked against a small safe alphabet instead
//! ([`directive_safe`]).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Bytes that need no quoting in a bash word (not at risk of globbing, expansion, splitting or
/// tilde expansion).
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b)
}

/// Quotes `s` as a single bash word that expands to exactly `s`, on one line.
///
/// - plain words (`[A-Za-z0-9_@%+=:,./-]+`) are returned as they are;
/// - printable text (valid UTF-8 without control characters) is single-quoted, with `'`
///   written as `'\''`;
/// - anything else (newlines, tabs, escape sequences, invalid UTF-8) is ANSI-C quoted:
///   `$'…'` with `\\`, `\'` and `\xHH` escapes.
///
/// Arguments and paths cannot contain NUL bytes on Unix, so neither can `s` in practice; a NUL
/// would be written as `\x00`, which bash truncates.
pub fn shell_quote(s: &OsStr) -> String {
    let bytes = s.as_bytes();
    if !bytes.is_empty() && bytes.iter().all(|b| plain(*b)) {
        // Plain bytes are ASCII, hence valid UTF-8.
        return String::from_utf8_lossy(bytes).into_owned();
    }
    if let Ok(text) = std::str::from_utf8(bytes)
        && !text.chars().any(char::is_control)
    {
        return format!("'{}'", text.replace('\'', r"'\''"));
    }
    let mut out = String::from("$'");
    for &b in bytes {
        match b {
            b'\\' => out.push_str(r"\\"),
            b'\'' => out.push_str(r"\'"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('\'');
    out
}

/// [`shell_quote`] for text.
pub fn shell_quote_str(s: &str) -> String {
    shell_quote(OsStr::new(s))
}

/// Quotes every word of a command and joins them with spaces.
pub fn shell_join<S: AsRef<OsStr>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `value` may appear verbatim after `#SBATCH --name=`: non-empty and only
/// `[A-Za-z0-9_.,:@/+=-]` — no spaces, quotes, `#`, `%`, `$`, backslashes or line breaks.
/// (`%` is allowed only in the log-file patterns this crate writes itself.)
pub fn directive_safe(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.,:@/+=-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;
    use std::process::Command;

    /// What bash makes of `quoted` as an argument of printf.
    fn through_bash(quoted: &str) -> Vec<u8> {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("printf %s {quoted}"))
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "bash rejected {quoted:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn nasty() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = [
            "plain-name_1.0",
            "with space",
            "$(touch /tmp/vaepipe-pwned-quote)",
            "`touch /tmp/vaepipe-pwned-quote`",
            "it's \"quoted\"",
            "line1\nline2\n",
            "tab\there\r\x1b[31mred",
            "back\\slash \\' \\\"",
            "glob * ? [a-z] ~ ~root {a,b} !! #comment ;&|<>",
            "${HOME} $HOME $((1+1)) $'x' \\x41",
            "ünïcødé ✓ 日本",
            "-n",
            "'",
            "''",
            "",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        v.push(vec![0xff, 0xfe, b'a', 0x80, b'\n', 0x01]); // invalid UTF-8 and control bytes
        v.push((1u8..=255).collect()); // every byte but NUL
        v
    }

    #[test]
    fn bash_reads_back_exactly_the_bytes() {
        for raw in nasty() {
            let quoted = shell_quote(&std::ffi::OsString::from_vec(raw.clone()));
            assert_eq!(through_bash(&quoted), raw, "round trip of {quoted}");
        }
        assert!(
            !std::path::Path::new("/tmp/vaepipe-pwned-quote").exists(),
            "a quoted value was executed"
        );
    }

    #[test]
    fn quoted_words_stay_on_one_line() {
        for raw in nasty() {
            let quoted = shell_quote(&std::ffi::OsString::from_vec(raw));
            assert!(
                !quoted.contains('\n') && !quoted.contains('\r'),
                "{quoted:?} spans lines"
            );
        }
    }

    #[test]
    fn plain_words_are_left_alone_and_empty_is_quoted() {
        assert_eq!(shell_quote_str("/work/x-1.toml"), "/work/x-1.toml");
        assert_eq!(shell_quote_str("--set=train.k=5"), "--set=train.k=5");
        assert_eq!(shell_quote_str(""), "''");
        assert_eq!(shell_quote_str("a b"), "'a b'");
        assert_eq!(shell_quote_str("a\nb"), r"$'a\x0ab'");
    }

    #[test]
    fn joined_commands_keep_their_words() {
        let words = ["printf", "%s|", "a b", "c'd", "e\nf"];
        let out = Command::new("bash")
            .arg("-c")
            .arg(shell_join(&words))
            .output()
            .expect("bash runs");
        assert_eq!(out.stdout, b"a b|c'd|e\nf|");
    }

    #[test]
    fn directive_values_reject_what_sbatch_would_reinterpret() {
        assert!(directive_safe("debug,gpu"));
        assert!(directive_safe("1-00:30:00"));
        assert!(directive_safe("4G"));
        for bad in [
            "", "a b", "a#b", "a%b", "a$b", "a\nb", "a'b", "a\"b", "a\\b", "a;b",
        ] {
            assert!(!directive_safe(bad), "{bad:?} accepted");
        }
    }
}
