//! A small document model and its two writers: GitHub-flavoured Markdown that references figure
//! files, and one self-contained HTML5 file with inline CSS and the figures embedded.
//!
//! All text in the model is plain text: both writers escape it, so nothing in a title, cell,
//! caption or code block can turn into markup. Output depends only on the document.

use crate::base64;
use crate::figure::Rendered;

/// A report: a title and a sequence of blocks.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Document {
    /// Document title (`#` heading in Markdown, `<title>` and `<h1>` in HTML).
    pub title: String,
    /// Content, in order.
    pub blocks: Vec<Block>,
}

/// Horizontal alignment of a table column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Align {
    /// Left-aligned (text).
    #[default]
    Left,
    /// Centred.
    Center,
    /// Right-aligned (numbers).
    Right,
}

/// One block of a [`Document`].
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A section heading. Level 1 is a top-level section (`##` / `<h2>`, since the document
    /// title takes the first level); deeper levels nest, up to 5.
    Heading(u8, String),
    /// A paragraph; blank lines inside separate paragraphs.
    Paragraph(String),
    /// A table. Rows shorter than the widest row are padded with empty cells; columns without
    /// an entry in `align` are left-aligned.
    Table {
        /// Column titles.
        header: Vec<String>,
        /// Cells, row by row.
        rows: Vec<Vec<String>>,
        /// Alignment per column.
        align: Vec<Align>,
    },
    /// A figure. Markdown references `<figures_dir>/<file_stem>.png` (the caller writes the
    /// file); HTML embeds the SVG.
    Figure {
        /// File name of the figure without extension.
        file_stem: String,
        /// Caption (also the image's alternative text).
        caption: String,
        /// The drawing.
        rendered: Rendered,
    },
    /// Preformatted text, e.g. the pipeline spec or a command line.
    Code {
        /// Language tag (e.g. `toml`); characters other than letters, digits and `+-._` are
        /// dropped.
        lang: String,
        /// The text, shown verbatim.
        text: String,
    },
    /// A bulleted list of plain-text items.
    List(Vec<String>),
}

/// Heading level in the output (2..=6) for a block level.
fn heading_level(level: u8) -> usize {
    usize::from(level.clamp(1, 5)) + 1
}

/// Keeps only characters that are safe in a language tag / class name.
fn clean_lang(lang: &str) -> String {
    lang.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_'))
        .collect()
}

/// The column count of a table: rows shorter than the widest row (or the header) are padded
/// with empty cells.
fn table_shape(header: &[String], rows: &[Vec<String>]) -> usize {
    rows.iter()
        .map(Vec::len)
        .chain([header.len()])
        .max()
        .unwrap_or(0)
}

/// Cell `i` of a row, empty where the row is too short.
fn cell(row: &[String], i: usize) -> &str {
    row.get(i).map_or("", String::as_str)
}

/// The alignment of column `i`: left where `align` has no entry for it.
fn column_align(align: &[Align], i: usize) -> Align {
    align.get(i).copied().unwrap_or_default()
}

/// Splits paragraph text at blank lines.
fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(current.join("\n"));
                current.clear();
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        out.push(current.join("\n"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Markdown

/// Escapes one line of plain text for Markdown: every character with inline meaning is
/// backslash-escaped, and so is a leading character that would start a block (list item,
/// heading, quote, setext underline, ordered-list number).
fn md_line(text: &str) -> String {
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '&' | '|' | '~' | '#' | '$' | '!'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    // Block starts: "-", "+", "=" at the start of a line, and "12." / "12)".
    if out.starts_with(['-', '+', '=']) {
        out.insert(0, '\\');
    } else {
        // An ordered-list marker is digits, then `.` or `)`, then a space or the line's end.
        let digits = out.chars().take_while(char::is_ascii_digit).count();
        let rest = &out[digits..];
        if digits > 0
            && rest.starts_with(['.', ')'])
            && rest[1..].chars().next().is_none_or(char::is_whitespace)
        {
            out.insert(digits, '\\');
        }
    }
    out
}

/// Escapes a table cell: like [`md_line`] per line, lines joined with `<br>`.
fn md_cell(text: &str) -> String {
    let lines: Vec<String> = text.lines().map(md_line).collect();
    let joined = lines.join("<br>");
    if joined.is_empty() {
        " ".to_string()
    } else {
        joined
    }
}

/// Percent-encodes a path for a Markdown link target, keeping `/` only if `keep_slash`.
fn url_path(path: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Writes a table as a Markdown pipe table (nothing for a table without columns).
fn md_table(out: &mut String, header: &[String], rows: &[Vec<String>], align: &[Align]) {
    let cols = table_shape(header, rows);
    if cols == 0 {
        return;
    }
    let line = |row: &[String]| {
        let cells: Vec<String> = (0..cols).map(|i| md_cell(cell(row, i))).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    out.push_str(&line(header));
    let rule: Vec<&str> = (0..cols)
        .map(|i| match column_align(align, i) {
            Align::Left => ":---",
            Align::Center => ":---:",
            Align::Right => "---:",
        })
        .collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for row in rows {
        out.push_str(&line(row));
    }
}

/// Writes `doc` as GitHub-flavoured Markdown. Figures are referenced as
/// `<figures_dir_rel>/<file_stem>.png` (percent-encoded), each followed by its numbered caption.
pub fn to_markdown(doc: &Document, figures_dir_rel: &str) -> String {
    let mut out = String::new();
    out.push_str("# ");
    out.push_str(&md_line(&doc.title));
    out.push('\n');
    let dir = figures_dir_rel.trim_end_matches('/');
    let mut figure_no = 0;
    for block in &doc.blocks {
        out.push('\n');
        match block {
            Block::Heading(level, text) => {
                out.push_str(&"#".repeat(heading_level(*level)));
                out.push(' ');
                out.push_str(&md_line(text));
                out.push('\n');
            }
            Block::Paragraph(text) => {
                let paras: Vec<String> = paragraphs(text)
                    .iter()
                    .map(|p| p.lines().map(md_line).collect::<Vec<_>>().join("\n"))
                    .collect();
                out.push_str(&paras.join("\n\n"));
                out.push('\n');
            }
            Block::Table {
                header,
                rows,
                align,
            } => md_table(&mut out, header, rows, align),
            Block::Figure {
                file_stem, caption, ..
            } => {
                figure_no += 1;
                let file = format!("{}.png", url_path(file_stem, false));
                let target = if dir.is_empty() {
                    file
                } else {
                    format!("{}/{file}", url_path(dir, true))
                };
                let alt = md_line(caption);
                out.push_str(&format!("![{alt}]({target})\n\n"));
                if alt.is_empty() {
                    out.push_str(&format!("*Figure {figure_no}.*\n"));
                } else {
                    out.push_str(&format!("*Figure {figure_no}. {alt}*\n"));
                }
            }
            Block::Code { lang, text } => {
                let longest_run = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
                let fence = "`".repeat(longest_run.max(2) + 1);
                out.push_str(&fence);
                out.push_str(&clean_lang(lang));
                out.push('\n');
                out.push_str(text);
                if !text.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&fence);
                out.push('\n');
            }
            Block::List(items) => {
                for item in items {
                    out.push_str("- ");
                    out.push_str(&md_line(&item.lines().collect::<Vec<_>>().join(" ")));
                    out.push('\n');
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// HTML

/// Escapes text for HTML content and attribute values; control characters other than newline
/// and tab, and the non-characters U+FFFE and U+FFFF, become U+FFFD (so the output stays
/// well-formed XML as well).
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            '\r' => {}
            c if c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#":root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: #1b1b1b;
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "DejaVu Sans", sans-serif; }
main { max-width: 60rem; margin: 0 auto; padding: 2rem 1.25rem 4rem; }
h1 { font-size: 2rem; line-height: 1.2; margin: 0 0 1.5rem; }
h2 { font-size: 1.5rem; line-height: 1.25; margin: 2.5rem 0 .75rem; padding-bottom: .25rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.25rem; margin: 2rem 0 .5rem; }
h4, h5, h6 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
p, ul { margin: .75rem 0; }
li { margin: .2rem 0; }
.table-wrap { overflow-x: auto; margin: 1rem 0; }
table { border-collapse: collapse; font-size: .95rem; font-variant-numeric: tabular-nums; }
th, td { padding: .35rem .75rem; border-bottom: 1px solid #e3e3e3; vertical-align: top; }
thead th { border-bottom: 2px solid #888; background: #fafafa; }
tbody tr:nth-child(even) { background: #f3f5f8; }
.al-l { text-align: left; }
.al-c { text-align: center; }
.al-r { text-align: right; }
figure { margin: 1.75rem 0; text-align: center; }
figure img { max-width: 100%; height: auto; }
figcaption { margin-top: .5rem; color: #444; font-size: .95rem; }
.fig-no { font-weight: 600; }
pre { background: #f6f8fa; border: 1px solid #e1e4e8; border-radius: 4px; padding: .75rem 1rem; overflow-x: auto; font-size: .875rem; line-height: 1.45; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
@media print {
  body { font-size: 11pt; }
  main { max-width: none; padding: 0; }
  h2, h3, h4 { break-after: avoid; }
  figure, table, pre { break-inside: avoid; }
  pre { white-space: pre-wrap; }
  tbody tr:nth-child(even), thead th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"#;

/// Writes a table as HTML in a horizontally scrolling wrapper (nothing for a table without
/// columns); line breaks in body cells become `<br />`.
fn html_table(out: &mut String, header: &[String], rows: &[Vec<String>], align: &[Align]) {
    let cols = table_shape(header, rows);
    if cols == 0 {
        return;
    }
    let class = |i: usize| match column_align(align, i) {
        Align::Left => "al-l",
        Align::Center => "al-c",
        Align::Right => "al-r",
    };
    out.push_str("<div class=\"table-wrap\">\n<table>\n<thead>\n<tr>");
    for i in 0..cols {
        out.push_str(&format!(
            "<th class=\"{}\">{}</th>",
            class(i),
            html_escape(cell(header, i))
        ));
    }
    out.push_str("</tr>\n</thead>\n<tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for i in 0..cols {
            let text = html_escape(cell(row, i)).replace('\n', "<br />");
            out.push_str(&format!("<td class=\"{}\">{text}</td>", class(i)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n</div>\n");
}

/// Writes `doc` as one self-contained HTML5 file: inline CSS, figures embedded as
/// `data:image/svg+xml` images (an `<img>` keeps each SVG isolated: no shared ids, no scripts),
/// no external resources and no JavaScript; a Content-Security-Policy forbids loading any.
/// The markup is also well-formed XML (void elements self-closed), which tests rely on.
pub fn to_html(doc: &Document) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\" />\n");
    out.push_str(
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\" />\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         img-src data:; style-src 'unsafe-inline'\" />\n",
    );
    out.push_str(&format!(
        "<title>{}</title>\n",
        html_escape(doc.title.trim())
    ));
    out.push_str("<style>\n");
    out.push_str(CSS);
    out.push_str("</style>\n</head>\n<body>\n<main>\n");
    out.push_str(&format!("<h1>{}</h1>\n", html_escape(&doc.title)));
    let mut figure_no = 0;
    for block in &doc.blocks {
        match block {
            Block::Heading(level, text) => {
                let h = heading_level(*level);
                out.push_str(&format!("<h{h}>{}</h{h}>\n", html_escape(text)));
            }
            Block::Paragraph(text) => {
                for p in paragraphs(text) {
                    out.push_str(&format!("<p>{}</p>\n", html_escape(&p)));
                }
            }
            Block::Table {
                header,
                rows,
                align,
            } => html_table(&mut out, header, rows, align),
            Block::Figure {
                caption, rendered, ..
            } => {
                figure_no += 1;
                let caption = html_escape(caption);
                out.push_str(&format!(
                    "<figure id=\"figure-{figure_no}\">\n<img src=\"data:image/svg+xml;base64,{}\" \
                     width=\"{}\" height=\"{}\" alt=\"{caption}\" />\n<figcaption><span \
                     class=\"fig-no\">Figure {figure_no}.</span> {caption}</figcaption>\n</figure>\n",
                    base64::encode(rendered.svg.as_bytes()),
                    rendered.width,
                    rendered.height,
                ));
            }
            Block::Code { lang, text } => {
                let lang = clean_lang(lang);
                let class = if lang.is_empty() {
                    String::new()
                } else {
                    format!(" class=\"language-{lang}\"")
                };
                out.push_str(&format!(
                    "<pre><code{class}>{}</code></pre>\n",
                    html_escape(text.trim_end_matches('\n'))
                ));
            }
            Block::List(items) => {
                out.push_str("<ul>\n");
                for item in items {
                    out.push_str(&format!("<li>{}</li>\n", html_escape(item)));
                }
                out.push_str("</ul>\n");
            }
        }
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_line_escapes_inline_and_block_syntax() {
        assert_eq!(md_line("a*b_c"), "a\\*b\\_c");
        assert_eq!(md_line("<b>&"), "\\<b\\>\\&");
        assert_eq!(md_line("- not a list"), "\\- not a list");
        assert_eq!(md_line("12. not a list"), "12\\. not a list");
        assert_eq!(md_line("3)"), "3\\)");
        assert_eq!(md_line("86.1 nats"), "86.1 nats");
        assert_eq!(md_line("# not a heading"), "\\# not a heading");
        assert_eq!(md_line("$(rm -rf /)"), "\\$(rm -rf /)");
        assert_eq!(md_line("plain text 1.5"), "plain text 1.5");
    }

    #[test]
    fn url_paths_are_percent_encoded() {
        assert_eq!(url_path("fig 1(a)", false), "fig%201%28a%29");
        assert_eq!(url_path("a/b", false), "a%2Fb");
        assert_eq!(url_path("figures/x", true), "figures/x");
    }

    #[test]
    fn code_fences_outgrow_backtick_runs() {
        let doc = Document {
            title: "t".into(),
            blocks: vec![Block::Code {
                lang: "sh\"><x".into(),
                text: "echo ```` done".into(),
            }],
        };
        let md = to_markdown(&doc, "figures");
        assert!(md.contains("\n`````shx\necho ```` done\n`````\n"), "{md}");
    }

    #[test]
    fn paragraphs_split_at_blank_lines() {
        assert_eq!(paragraphs("a\nb\n\n\nc\n"), vec!["a\nb", "c"]);
        assert!(paragraphs("  \n").is_empty());
    }
}
