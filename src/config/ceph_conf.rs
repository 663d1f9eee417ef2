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

/// Parses `text`, the contents of `path`. Values are never quoted in an
/// error (a keyring's line holds a key).
pub fn parse(path: &Path, text: &str) -> Result<Vec<Entry>, ParseError> {
    let error = |line: usize, reason: &str| ParseError { path: path.to_path_buf(), line, reason: reason.to_string() };
    let mut entries = Vec::new();
    let mut section: Option<String> = None;
    // A byte order mark (an editor's) is not part of the first line.
    let mut lines = text.strip_prefix('\u{feff}').unwrap_or(text).lines().enumerate();
    while let Some((index, first)) = lines.next() {
        let number = index + 1;
        // A trailing backslash joins the next line — unless it ends a
        // comment, which ends the line.
        let mut line = String::new();
        let mut physical = first;
        loop {
            let (content, commented) = strip_comment(physical).map_err(|r| error(number, r))?;
            match content.strip_suffix('\\') {
                Some(joined) if !commented => {
                    line.push_str(joined);
                    physical = lines.next().map(|(_, next)| next).ok_or_else(|| error(number, "a line continued ('\\' at its end) past the end of the file"))?;
                }
                _ => {
                    line.push_str(content);
                    break;
                }
            }
        }
        let content = line.trim();
        if content.is_empty() {
            continue;
        }
        if let Some(rest) = content.strip_prefix('[') {
            let name = rest.strip_suffix(']').ok_or_else(|| error(number, "a section header has no closing ']'"))?;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                return Err(error(number, "a section name is letters, digits, '.', '_' or '-', with no spaces (e.g. [global], [client.admin])"));
            }
            section = Some(name.to_string());
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            return Err(error(number, "expected 'option = value' or a [section] header"));
        };
        let option = canonical(key);
        if option.is_empty() || !option.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(error(number, "an option name is letters, digits, spaces, '-' or '_'"));
        }
        let Some(section) = &section else {
            return Err(error(number, "an option before any [section] header (put it under [global])"));
        };
        let value = unquote(value.trim()).map_err(|r| error(number, r))?;
        entries.push(Entry { section: section.clone(), option, value, line: number });
    }
    Ok(entries)
}

/// `line` up to its first `#` or `;` outside quotes (single or double)
/// and not escaped with `\`, and whether a comment followed.
fn strip_comment(line: &str) -> Result<(&str, bool), &'static str> {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' | '\'' if quote == Some(c) => quote = None,
            '"' | '\'' if quote.is_none() => quote = Some(c),
            '#' | ';' if quote.is_none() => return Ok((&line[..i], true)),
            _ => {}
        }
    }
    if quote.is_some() {
        return Err("a quoted value has no closing quote");
    }
    Ok((line, false))
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
        parse(Path::new("/etc/ceph/ceph.conf"), text).unwrap().into_iter().map(|e| (e.section, e.option, e.value, e.line)).collect()
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
            ("[ global ]\n", 1, "no spaces"),
            ("[global]\nfsid = a \\", 2, "past the end of the file"),
            ("[global]\nfsid = \"abc\" trailing\n", 2, "text after a quoted value"),
            ("[global]\n = x\n", 2, "an option name"),
            ("[glo/bal]\n", 1, "a section name"),
            ("[global]\nmon.host = x\n", 2, "an option name"),
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
