//! Integration tests of the document writers: hostile text stays text in HTML and Markdown,
//! tables keep their shape, figures are embedded (HTML) or referenced (Markdown), and output is
//! deterministic.

use std::collections::BTreeSet;

use vaepipe_report::{Align, BarChart, Block, Document, Rendered, bar_chart, to_html, to_markdown};

mod common;
use common::{base64_decode, element_names};

const HOSTILE: &str = "<script>alert(\"x\")</script> & 'quoted' $(rm -rf /)";

fn small_figure() -> Rendered {
    bar_chart(&BarChart {
        title: "Active units".into(),
        value_label: "units".into(),
        items: vec![("a".into(), 3.0), ("b".into(), 5.0)],
    })
    .expect("renders")
}

fn hostile_document() -> Document {
    Document {
        title: HOSTILE.into(),
        blocks: vec![
            Block::Heading(1, HOSTILE.into()),
            Block::Paragraph(format!("{HOSTILE}\n\nsecond paragraph")),
            Block::Table {
                header: vec!["run".into(), HOSTILE.into(), "nll".into()],
                rows: vec![
                    vec!["a|b".into(), "line one\nline two".into(), "86.1".into()],
                    vec![HOSTILE.into()],
                ],
                align: vec![Align::Left, Align::Center, Align::Right],
            },
            Block::Figure {
                file_stem: "active units".into(),
                caption: HOSTILE.into(),
                rendered: small_figure(),
            },
            Block::Code {
                lang: "toml\"><script>".into(),
                text: format!("{HOSTILE}\n</code></pre><b>"),
            },
            Block::List(vec![
                HOSTILE.into(),
                "- not nested".into(),
                "bad \u{1}\u{FFFE} chars".into(),
            ]),
        ],
    }
}

/// Parses the HTML as XML (it is written to be well-formed; the doctype needs DTD support).
fn parse_html(html: &str) -> roxmltree::Document<'_> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(html, options).expect("HTML is well-formed XML")
}

/// Text content of every element named `tag`.
fn texts(doc: &roxmltree::Document<'_>, tag: &str) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name(tag))
        .map(|n| {
            n.descendants()
                .filter(|d| d.is_text())
                .map(|d| d.text().unwrap_or(""))
                .collect::<String>()
        })
        .collect()
}

#[test]
fn html_escapes_every_piece_of_text() {
    let html = to_html(&hostile_document());
    assert!(
        !html.to_lowercase().contains("<script"),
        "raw <script> in the HTML"
    );
    assert!(html.contains(
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;quoted&#39; $(rm -rf /)"
    ));

    // The output is well-formed XML, so its structure can be checked exactly.
    let doc = parse_html(&html);
    let tags = element_names(&doc);
    let allowed: BTreeSet<&str> = [
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "main",
        "h1",
        "h2",
        "p",
        "div",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "br",
        "figure",
        "img",
        "figcaption",
        "span",
        "pre",
        "code",
        "ul",
        "li",
    ]
    .into();
    assert!(
        tags.is_subset(&allowed),
        "unexpected elements: {:?}",
        tags.difference(&allowed)
    );
    assert!(!tags.contains("b"), "markup from a code block leaked");

    // Every place the hostile string went shows it literally.
    assert_eq!(texts(&doc, "title"), [HOSTILE]);
    assert_eq!(texts(&doc, "h1"), [HOSTILE]);
    assert_eq!(texts(&doc, "h2"), [HOSTILE]);
    assert_eq!(texts(&doc, "p")[0], HOSTILE);
    assert!(texts(&doc, "th").contains(&HOSTILE.to_string()));
    assert!(texts(&doc, "td").contains(&HOSTILE.to_string()));
    assert!(texts(&doc, "li").contains(&HOSTILE.to_string()));
    assert!(texts(&doc, "li").contains(&"bad \u{FFFD}\u{FFFD} chars".to_string()));
    assert!(texts(&doc, "figcaption")[0].ends_with(HOSTILE));
    assert_eq!(
        texts(&doc, "code"),
        [format!("{HOSTILE}\n</code></pre><b>")]
    );
    let img = doc
        .descendants()
        .find(|n| n.has_tag_name("img"))
        .expect("img");
    assert_eq!(img.attribute("alt"), Some(HOSTILE));
    let code = doc
        .descendants()
        .find(|n| n.has_tag_name("code"))
        .expect("code");
    assert_eq!(code.attribute("class"), Some("language-tomlscript"));
}

#[test]
fn html_is_self_contained_with_embedded_figures() {
    let document = hostile_document();
    let html = to_html(&document);
    let doc = parse_html(&html);
    // No script, no external references.
    assert!(
        doc.descendants()
            .all(|n| !n.has_tag_name("script") && !n.has_tag_name("link"))
    );
    for node in doc.descendants().filter(|n| n.is_element()) {
        for attr in node.attributes() {
            let v = attr.value();
            assert!(
                !v.contains("http:") && !v.contains("https:") && !v.starts_with("//"),
                "external reference in {}={v:?}",
                attr.name()
            );
        }
    }
    // The figure is the SVG itself, base64-encoded.
    let img = doc
        .descendants()
        .find(|n| n.has_tag_name("img"))
        .expect("img");
    let src = img.attribute("src").expect("src");
    let b64 = src
        .strip_prefix("data:image/svg+xml;base64,")
        .expect("SVG data URI");
    let Block::Figure { rendered, .. } = &document.blocks[3] else {
        unreachable!("block 3 is the figure");
    };
    assert_eq!(base64_decode(b64), rendered.svg.as_bytes());
    assert_eq!(
        img.attribute("width"),
        Some(rendered.width.to_string().as_str())
    );
    // Deterministic.
    assert_eq!(html, to_html(&document));
}

#[test]
fn html_tables_are_rectangular_and_aligned() {
    let html = to_html(&hostile_document());
    let doc = parse_html(&html);
    let rows: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("tr")).collect();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let cells: Vec<_> = row.children().filter(|c| c.is_element()).collect();
        assert_eq!(cells.len(), 3, "every row has the header's width");
        let classes: Vec<&str> = cells
            .iter()
            .map(|c| c.attribute("class").unwrap_or(""))
            .collect();
        assert_eq!(classes, ["al-l", "al-c", "al-r"]);
    }
    // A newline inside a cell becomes a line break.
    assert!(html.contains("line one<br />line two"));
}

#[test]
fn markdown_escapes_text_and_tables() {
    let md = to_markdown(&hostile_document(), "figures/");
    // No raw HTML and no live syntax from the text (outside the verbatim code block).
    let outside_code: String = md.split("```").step_by(2).collect();
    assert!(!outside_code.contains("<script>"), "{outside_code}");
    assert!(md.contains("\\<script\\>alert(\"x\")\\</script\\> \\& 'quoted' \\$(rm -rf /)"));
    assert!(md.starts_with("# \\<script\\>"));
    assert!(md.contains("\n## \\<script\\>"));

    // Table: header, rule with alignments, one line per row, pipes escaped, newlines as <br>.
    let table: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(table.len(), 4, "{md}");
    assert_eq!(table[1], "| :--- | :---: | ---: |");
    assert_eq!(table[2], "| a\\|b | line one<br>line two | 86.1 |");
    for line in &table {
        let unescaped_pipes = line
            .char_indices()
            .filter(|&(i, c)| c == '|' && (i == 0 || line.as_bytes()[i - 1] != b'\\'))
            .count();
        assert_eq!(unescaped_pipes, 4, "row {line:?} does not have 3 columns");
    }

    // The figure is referenced relatively, percent-encoded, with its numbered caption.
    assert!(md.contains("](figures/active%20units.png)\n"), "{md}");
    assert!(md.contains("\n*Figure 1. \\<script\\>"));

    // Code stays verbatim inside a fence; its language tag is sanitised.
    assert!(md.contains(&format!(
        "```tomlscript\n{HOSTILE}\n</code></pre><b>\n```\n"
    )));

    // List items cannot start nested lists.
    assert!(md.contains("\n- \\- not nested\n"));

    // Deterministic.
    assert_eq!(md, to_markdown(&hostile_document(), "figures/"));
}

#[test]
fn markdown_handles_degenerate_input() {
    let doc = Document {
        title: String::new(),
        blocks: vec![
            Block::Table {
                header: vec![],
                rows: vec![],
                align: vec![],
            },
            Block::Table {
                header: vec![],
                rows: vec![vec!["only".into(), "row".into()]],
                align: vec![],
            },
            Block::Heading(0, "level zero".into()),
            Block::Heading(9, "level nine".into()),
            Block::List(vec![]),
            Block::Paragraph(String::new()),
        ],
    };
    let md = to_markdown(&doc, "");
    assert!(
        md.contains("|   |   |\n| :--- | :--- |\n| only | row |\n"),
        "{md}"
    );
    assert!(md.contains("\n## level zero\n"));
    assert!(md.contains("\n###### level nine\n"));
    let html = to_html(&doc);
    let parsed = parse_html(&html);
    assert_eq!(texts(&parsed, "td"), ["only", "row"]);
    assert!(html.contains("<h2>level zero</h2>"));
    assert!(html.contains("<h6>level nine</h6>"));
}
