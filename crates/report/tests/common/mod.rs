//! Helpers shared by the integration tests of this crate (each test file that needs them
//! declares `mod common;`, so not every helper is used by every file).
#![allow(dead_code)]

use std::collections::BTreeSet;

use vaepipe_report::{Rendered, ReportError};

/// Standard base64 decoding (test helper; the input is trusted).
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: {other}"),
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (value(c) << (18 - 6 * i)));
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

/// The names of all elements of a parsed XML document (HTML or SVG).
pub fn element_names<'a>(doc: &roxmltree::Document<'a>) -> BTreeSet<&'a str> {
    doc.descendants()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name())
        .collect()
}

/// Asserts that a figure function failed with an error `is_kind` accepts (`kind` names it).
#[track_caller]
fn assert_fails(
    result: Result<Rendered, ReportError>,
    kind: &str,
    is_kind: fn(&ReportError) -> bool,
) {
    match result {
        Err(e) if is_kind(&e) => {}
        Err(e) => panic!("expected {kind}, got another error: {e}"),
        Ok(_) => panic!("expected {kind}, but the figure was drawn"),
    }
}

/// Asserts that a figure function rejected its input as inconsistent.
#[track_caller]
pub fn assert_invalid(result: Result<Rendered, ReportError>) {
    assert_fails(result, "invalid input", |e| {
        matches!(e, ReportError::InvalidInput { .. })
    });
}

/// Asserts that a figure function found nothing to draw.
#[track_caller]
pub fn assert_no_data(result: Result<Rendered, ReportError>) {
    assert_fails(result, "no data", |e| {
        matches!(e, ReportError::NoData { .. })
    });
}
