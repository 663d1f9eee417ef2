//! The ini dialect of ceph.conf and keyring files, as Ceph's own parser
//! (`common/ConfUtils.cc`) reads it: `[section]` headers, `option = value`
//! lines whose option may be spelled with spaces, dashes or underscores,
//! `#` and `;` comments (also after a value), double-quoted values with
//! `\"` escapes, and a trailing `\` continuing a line. Every entry keeps its
//! line so a setting can be traced to it, and every error names the file
//! and the line.

use std::path::{Path, PathBuf};

/// One `option = value` line of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The section it is in, e.g. `global`, `client.admin`.
    pub section: String,
    /// The option in Ceph's canonical spelling: lower case, `_` for spaces
    /// and dashes (`mon host` and `mon-host` are `mon_host`).
    pub option: String,
    pub value: String,
    /// 1-based line number (of the first line of a continued line).
    pub line: usize,
}

/// A file that is not in the dialect, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} line {line}: {reason}", path.display())]
pub struct ParseError {
    pub path: PathBuf,
    pub line: usize,
    pub reason: String,
}

/// `option` in Ceph's canonical spelling: `_` for runs of spaces, dashes
/// and underscores. The case is kept, as Ceph keeps it: `Mon_Host` is no
/// option Ceph knows.
pub fn canonical(option: &str) -> String {
    option.split(|c: char| c.is_whitespace() || c == '-' || c == '_').filter(|w| !w.is_empty()).collect::<Vec<_>>().join("_")
}

/// A file's entries, and the lines Ceph would ignore, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub entries: Vec<Entry>,
    /// `line N: why`, never quoting a name or value of the line (a key
    /// pasted on a line of its own is one).
    pub ignored: Vec<String>,
}

/// Whether `option` could name one of Ceph's options (lower case, digits,
/// `_`); Ceph reads other names too, and ignores them.
pub fn is_option_name(option: &str) -> bool {
    !option.is_empty() && option.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Parses `text`, the contents of `path`. Values are never quoted in an
/// error (a keyring's line holds a key).
pub fn parse(path: &Path, text: &str) -> Result<Parsed, ParseError> {
    let error = |line: usize, reason: &str| ParseError { path: path.to_path_buf(), line, reason: reason.to_string() };
    let mut parsed = Parsed::default();
    let mut section: Option<String> = None;
    // A byte order mark (an editor's) is not part of the first line.
    let mut lines = text.strip_prefix('\u{feff}').unwrap_or(text).lines().enumerate();
    while let Some((index, first)) = lines.next() {
        let number = index + 1;
        // A trailing unescaped backslash joins the next line — unless it
        // ends a comment, which ends the line.
        let mut line = String::new();
        let mut physical = first;
        loop {
            let cut = strip_comment(physical).map_err(|r| error(number, r))?;
            if cut.continued {
                line.push_str(&cut.content[..cut.content.len() - 1]);
                physical = lines.next().map(|(_, next)| next).ok_or_else(|| error(number, "a line continued ('\\' at its end) past the end of the file"))?;
            } else {
                line.push_str(cut.content);
                break;
            }
        }
        let content = line.trim();
        if content.is_empty() {
            continue;
        }
        if let Some(rest) = content.strip_prefix('[') {
            let name = rest.strip_suffix(']').ok_or_else(|| error(number, "a section header has no closing ']'"))?;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                // Ceph reads `[ global ]` as a section of that name, which
                // no client reads: so do we, and say so.
                parsed.ignored.push(format!("line {number}: a section no client reads ([{name}]: spaces or other characters in its name)"));
            }
            section = Some(name.to_string());
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            return Err(error(number, "expected 'option = value' or a [section] header"));
        };
        let option = canonical(key);
        if option.is_empty() {
            return Err(error(number, "an option with no name"));
        }
        let Some(section) = &section else {
            return Err(error(number, "an option before any [section] header (put it under [global])"));
        };
        if !is_option_name(&option) {
            parsed.ignored.push(format!("line {number}: no option of Ceph's is named so (capitals or other characters in the name)"));
            continue;
        }
        let value = unquote(value.trim()).map_err(|r| error(number, r))?;
        parsed.entries.push(Entry { section: section.clone(), option, value, line: number });
    }
    Ok(parsed)
}

/// A physical line cut at its comment.
struct Cut<'a> {
    /// Up to the first `#` or `;` outside a quoted value and not escaped.
    content: &'a str,
    /// Ends with an unescaped `\` (and no comment followed): the next line
    /// continues it.
    continued: bool,
}

/// Cuts `line` at its comment. A value is quoted only when its first
/// character after the `=` is a quote: `it's` and `5" disk` are plain text,
/// as Ceph reads them.
fn strip_comment(line: &str) -> Result<Cut<'_>, &'static str> {
    let mut quote = None;
    let mut escaped = false;
    let mut after_eq = false;
    let mut value_started = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => {
                escaped = false;
                value_started |= after_eq;
            }
            '\\' => escaped = true,
            q @ ('"' | '\'') if quote == Some(q) => quote = None,
            q @ ('"' | '\'') if quote.is_none() && after_eq && !value_started => {
                quote = Some(q);
                value_started = true;
            }
            '#' | ';' if quote.is_none() => return Ok(Cut { content: &line[..i], continued: false }),
            '=' if !after_eq && quote.is_none() => after_eq = true,
            c if !c.is_whitespace() => value_started |= after_eq,
            _ => {}
        }
    }
    if quote.is_some() {
        return Err("a quoted value has no closing quote");
    }
    Ok(Cut { content: line, continued: escaped })
}

/// A value as written with its `\` escapes undone, or the text inside its
/// single or double quotes.
fn unquote(value: &str) -> Result<String, &'static str> {
    let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'');
    let inner = if quote.is_some() { &value[1..] } else { value };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => out.push(next),
                None if quote.is_none() => out.push('\\'),
                None => return Err("a quoted value has no closing quote"),
            },
            c if Some(c) == quote => {
                return if chars.as_str().trim().is_empty() { Ok(out) } else { Err("text after a quoted value") };
            }
            c => out.push(c),
        }
    }
    match quote {
        Some(_) => Err("a quoted value has no closing quote"),
        None => Ok(out),
    }
}

/// Ceph's metavariables in a path: `$cluster`, `$type`, `$id`, `$name`,
/// `$host` (and the `${...}` spellings) for the client `client.<id>`.
pub fn expand(path: &str, cluster: &str, id: &str, host: &str) -> String {
    let name = format!("client.{id}");
    let vars = [("cluster", cluster), ("type", "client"), ("id", id), ("name", name.as_str()), ("host", host)];
    let mut out = path.to_string();
    for (var, value) in vars {
        out = out.replace(&format!("${{{var}}}"), value);
    }
    // Longest names first would matter only for prefixes of each other;
    // none of these is.
    for (var, value) in vars {
        out = out.replace(&format!("${var}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Vec<(String, String, String, usize)> {
        parse(Path::new("/etc/ceph/ceph.conf"), text).unwrap().entries.into_iter().map(|e| (e.section, e.option, e.value, e.line)).collect()
    }

    fn parse_err(text: &str) -> String {
        parse(Path::new("/etc/ceph/ceph.conf"), text).unwrap_err().to_string()
    }

    fn e(s: &str, o: &str, v: &str, l: usize) -> (String, String, String, usize) {
        (s.into(), o.into(), v.into(), l)
    }

    #[test]
    fn option_spellings_comments_quotes_and_continuations_read_as_ceph_reads_them() {
        let text = "# a comment\n; another\n[global]\n  mon host = 10.0.0.1:6789, 10.0.0.2:6789  # inline\n\
                    mon-initial-members=a\nauth_client  required = cephx ; inline too\n\n[client.admin]\n\
                    keyring = \"/etc/ceph/a b;#.keyring\"\nrbd cache = \\\n  false\nlog file =\nquoted = \"say \\\"hi\\\"\"\n";
        assert_eq!(
            parse_ok(text),
            vec![
                e("global", "mon_host", "10.0.0.1:6789, 10.0.0.2:6789", 4),
                e("global", "mon_initial_members", "a", 5),
                e("global", "auth_client_required", "cephx", 6),
                e("client.admin", "keyring", "/etc/ceph/a b;#.keyring", 9),
                e("client.admin", "rbd_cache", "false", 10),
                e("client.admin", "log_file", "", 12),
                e("client.admin", "quoted", "say \"hi\"", 13),
            ]
        );
    }

    #[test]
    fn a_keyring_reads_with_the_same_parser() {
        let text = "[client.docker]\n\tkey = AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg==\n\tcaps mon = \"profile rbd\"\n";
        let entries = parse_ok(text);
        assert_eq!(entries[0], e("client.docker", "key", "AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg==", 2));
        assert_eq!(entries[1], e("client.docker", "caps_mon", "profile rbd", 3));
    }

    #[test]
    fn malformed_lines_are_refused_with_the_file_and_line() {
        let cases = [
            ("[global\nmon host = x\n", 1, "no closing ']'"),
            ("[global]\nmon host\n", 2, "expected 'option = value'"),
            ("mon host = x\n", 1, "before any [section]"),
            ("[global]\n\n\nfsid = \"abc\n", 4, "no closing quote"),
            ("[global]\nfsid = a \\", 2, "past the end of the file"),
            ("[global]\nfsid = \"abc\" trailing\n", 2, "text after a quoted value"),
            ("[global]\n = x\n", 2, "an option with no name"),
        ];
        for (text, line, why) in cases {
            let msg = parse_err(text);
            assert!(msg.starts_with(&format!("/etc/ceph/ceph.conf line {line}: ")) && msg.contains(why), "{text:?}: {msg}");
        }
    }

    #[test]
    fn a_value_never_appears_in_an_error() {
        let msg = parse(Path::new("/k"), "[client.a]\nkey = \"AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg==\n").unwrap_err().to_string();
        assert!(!msg.contains("AQBX"), "{msg}");
    }

    #[test]
    fn metavariables_expand_for_the_client() {
        assert_eq!(expand("/etc/pve/priv/$cluster.$name.keyring", "ceph", "admin", "h"), "/etc/pve/priv/ceph.client.admin.keyring");
        assert_eq!(expand("/x/${cluster}-$type-$id@$host", "c2", "docker", "node1"), "/x/c2-client-docker@node1");
        assert_eq!(expand("/x/$unknown", "ceph", "a", "h"), "/x/$unknown");
    }

    #[test]
    fn canonical_spelling_folds_spaces_dashes_and_case() {
        for s in ["mon host", "mon-host", "mon_host", " mon  host ", "mon__host", "mon -_host"] {
            assert_eq!(canonical(s), "mon_host", "{s}");
        }
        assert_eq!(canonical("Mon Host"), "Mon_Host", "Ceph keeps the case");
    }

    // What ceph-conf 16.2.15 reads (found by the attack pass).

    #[test]
    fn quotes_inside_a_plain_value_and_an_escaped_final_backslash_are_text() {
        assert_eq!(parse_ok("[global]\nb = it's # c\nc = 5\" disk\n"), vec![e("global", "b", "it's", 2), e("global", "c", "5\" disk", 3)]);
        assert_eq!(parse_ok("[global]\na = x\\\\\nb = 1\n"), vec![e("global", "a", "x\\", 2), e("global", "b", "1", 3)]);
    }

    #[test]
    fn names_ceph_would_ignore_are_skipped_and_noted_by_line_only() {
        let key = "AQB+x/yhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg==";
        let text = format!("[ global ]\nfsid = a\n[glo/bal]\n[global]\n{key}\nmon.host = x\nMon_Host = y\nmon host = z\n");
        let parsed = parse(Path::new("/c"), &text).unwrap();
        let got: Vec<_> = parsed.entries.iter().map(|e| (e.section.as_str(), e.option.as_str(), e.line)).collect();
        assert_eq!(got, vec![(" global ", "fsid", 2), ("global", "mon_host", 8)]);
        assert_eq!(parsed.ignored.len(), 5, "{:?}", parsed.ignored);
        assert!(!format!("{:?}", parsed.ignored).contains("AQB"), "{:?}", parsed.ignored);
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_line() {
        assert_eq!(parse_ok("\u{feff}[global]\nfsid = f\n"), vec![e("global", "fsid", "f", 2)]);
    }

    #[test]
    fn a_comment_ending_in_a_backslash_does_not_swallow_the_next_line() {
        // ceph-conf -c F --lookup mon_host prints "a"; rbdvol loses the line.
        assert_eq!(parse_ok("[global]\n# C:\\\nmon host = a\n"), vec![e("global", "mon_host", "a", 3)]);
        assert_eq!(parse_ok("[global]\nfsid = x # c \\\nmon host = a\n"), vec![e("global", "fsid", "x", 2), e("global", "mon_host", "a", 3)]);
    }

    #[test]
    fn a_backslash_escapes_a_comment_character_outside_quotes() {
        // ceph-conf: "a#b"; rbdvol: "a\\"
        assert_eq!(parse_ok("[global]\nmon host = a\\#b\n"), vec![e("global", "mon_host", "a#b", 2)]);
    }

    #[test]
    fn single_quoted_values_are_unquoted() {
        // ceph-conf: abc; rbdvol passes 'abc' with its quotes to librados.
        assert_eq!(parse_ok("[global]\nmon host = 'abc'\n"), vec![e("global", "mon_host", "abc", 2)]);
    }
}
