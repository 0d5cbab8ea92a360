//! Keys: Go `path.Clean` / `path.Join` semantics under a root.
//!
//! Every backend turns a relative path (what [`crate::Conn`] receives) into a key with
//! [`join`], exactly as Vitess does with `path.Join(root, relative)`, so keys written by
//! Vitess and by Toposphere are the same strings. One rule is stricter than Go: a relative
//! path whose `..` elements would climb above the root is refused instead of being resolved,
//! so a crafted name can never reach another cell's data (CVE-2023-29194/29195).

use crate::error::{Result, TopoError};

/// Go's `path.Clean`: the shortest path equivalent to `path` by purely lexical processing.
///
/// Multiple slashes become one, `.` elements go, `..` removes the element before it (and
/// `..` at the start of a rooted path is dropped), a trailing slash goes. An empty result is
/// `"."`.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    // Number of leading `..` kept in `out` (only possible for unrooted paths).
    let mut dotdot = 0usize;
    for elem in path.split('/') {
        match elem {
            "" | "." => {}
            ".." => {
                if out.len() > dotdot {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                    dotdot += 1;
                }
            }
            e => out.push(e),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// The canonical form of a relative path: rooted, cleaned, `"/"` for the root itself.
///
/// # Errors
/// [`TopoError::InvalidArgument`] naming `rel` when its `..` elements climb above the root,
/// or when it contains a NUL byte.
pub fn normalize(rel: &str) -> Result<String> {
    if rel.contains('\0') {
        return Err(TopoError::invalid(format!(
            "path {rel:?} contains a NUL byte"
        )));
    }
    let mut depth = 0usize;
    for elem in rel.split('/') {
        match elem {
            "" | "." => {}
            ".." => {
                if depth == 0 {
                    return Err(TopoError::invalid(format!(
                        "path {rel:?} climbs above the topology root"
                    )));
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    Ok(clean(&format!("/{rel}")))
}

/// Go's `path.Join(root, rel)` after checking `rel` with [`normalize`].
///
/// `join("/vitess/global", "keyspaces/ks/Keyspace")` is
/// `"/vitess/global/keyspaces/ks/Keyspace"`; `join("/vitess/global", "/")` is
/// `"/vitess/global"`. An empty root gives the canonical relative path.
///
/// # Errors
/// As [`normalize`].
pub fn join(root: &str, rel: &str) -> Result<String> {
    let rel = normalize(rel)?;
    if root.is_empty() {
        return Ok(rel);
    }
    Ok(clean(&format!("{root}/{rel}")))
}

/// The key prefix under which every key of `dir` sits: `join(root, dir)` followed by `/`
/// (just `"/"` when that would give `"//"`), as Vitess's etcd and consul `ListDir` use it.
///
/// # Errors
/// As [`normalize`].
pub fn dir_prefix(root: &str, dir: &str) -> Result<String> {
    let key = join(root, dir)?;
    if key == "/" {
        Ok(key)
    } else {
        Ok(format!("{key}/"))
    }
}

/// The relative path of `key` under `root`, in canonical form (`"/a/b"`), or `None` when the
/// key is not under the root.
pub fn strip_root(root: &str, key: &str) -> Option<String> {
    let root = clean(root);
    if root == "/" || root == "." || root.is_empty() {
        return Some(clean(&format!("/{key}")));
    }
    if key == root {
        return Some("/".to_string());
    }
    key.strip_prefix(&root)
        .filter(|rest| rest.starts_with('/'))
        .map(|rest| rest.to_string())
}

/// The parent directory of a canonical relative path (`"/a/b"` → `"/a"`, `"/a"` → `"/"`).
pub fn parent(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => path[..i].to_string(),
    }
}

/// The last element of a path (`"/a/b"` → `"b"`).
pub fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The first element of `rest` and whether more elements follow it (that is, whether it
/// names a directory): the grouping rule of Vitess's `ListDir` emulation over flat keys.
pub fn first_element(rest: &str) -> (&str, bool) {
    match rest.find('/') {
        Some(i) => (&rest[..i], true),
        None => (rest, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        // Cases from Go's path_test.go.
        let cases = [
            ("", "."),
            ("abc", "abc"),
            ("abc/def", "abc/def"),
            ("a/b/c", "a/b/c"),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("../../abc", "../../abc"),
            ("/abc", "/abc"),
            ("/", "/"),
            ("abc/", "abc"),
            ("abc/def/", "abc/def"),
            ("/abc/", "/abc"),
            ("//abc", "/abc"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/.", "abc"),
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../ghi/../jkl", "abc/jkl"),
            ("abc/def/..", "abc"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            ("abc/./../def", "def"),
            ("abc//./../def", "def"),
            ("abc/../../././../def", "../../def"),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn join_under_root() {
        assert_eq!(
            join("/vitess/global", "keyspaces/ks/Keyspace").unwrap(),
            "/vitess/global/keyspaces/ks/Keyspace"
        );
        assert_eq!(join("/vitess/global", "/").unwrap(), "/vitess/global");
        assert_eq!(join("/vitess/global", "").unwrap(), "/vitess/global");
        assert_eq!(
            join("/vitess/global/", "//a//b/").unwrap(),
            "/vitess/global/a/b"
        );
        assert_eq!(join("/r", "./a/./b/.").unwrap(), "/r/a/b");
        assert_eq!(join("/r", "a/../b").unwrap(), "/r/b");
        assert_eq!(join("/", "a").unwrap(), "/a");
        assert_eq!(join("vitess/global", "a").unwrap(), "vitess/global/a");
    }

    #[test]
    fn climbing_above_root_is_refused() {
        for bad in [
            "..",
            "../x",
            "/a/../../b",
            "a/../../..",
            "./../cell2/Tablet",
        ] {
            let err = join("/vitess/global", bad).unwrap_err();
            assert!(
                matches!(&err, TopoError::InvalidArgument(m) if m.contains(bad)),
                "{bad}: {err}"
            );
        }
        assert!(join("/r", "a\0b").is_err());
    }

    #[test]
    fn prefixes_and_parts() {
        assert_eq!(dir_prefix("/r", "/").unwrap(), "/r/");
        assert_eq!(dir_prefix("/", "/").unwrap(), "/");
        assert_eq!(dir_prefix("/r", "a/b/").unwrap(), "/r/a/b/");
        assert_eq!(strip_root("/r", "/r/a/b").as_deref(), Some("/a/b"));
        assert_eq!(strip_root("/r", "/r").as_deref(), Some("/"));
        assert_eq!(strip_root("/r", "/rx/a"), None);
        assert_eq!(strip_root("/", "/a"), Some("/a".to_string()));
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(base("/a/b"), "b");
        assert_eq!(first_element("a/b/c"), ("a", true));
        assert_eq!(first_element("a"), ("a", false));
    }
}
