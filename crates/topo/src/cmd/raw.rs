//! Raw access to topology files: TopoCat/Ls/Cp/Rm and the zk-style verbs.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use futures::StreamExt;
use serde_json::Value;
use topo_core::{Conn, ConnExt, DirEntryType, ErrorKind, Result, TopoError};
use topo_proto::json::{decode_content, message_type_for_path, to_json, JsonForm};
use toposphere::Server;

use crate::args::Command;
use crate::cmd::{check_record_bytes, confirm, read_file, write_file};
use crate::output::print;

/// Shell-style matching of one path element: `*` any run, `?` any one character.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(
        &pattern.chars().collect::<Vec<_>>(),
        &name.chars().collect::<Vec<_>>(),
    )
}

/// Expands wildcards element by element (Vitess's `ResolveWildcards`).
async fn resolve(conn: &dyn Conn, path: &str) -> Result<Vec<String>> {
    let mut current = vec![String::new()];
    for elem in path.split('/').filter(|e| !e.is_empty()) {
        let mut next = Vec::new();
        for prefix in &current {
            if elem.contains(['*', '?']) {
                let dir = if prefix.is_empty() {
                    "/".to_string()
                } else {
                    prefix.clone()
                };
                match conn.list_dir(&dir, false).await {
                    Ok(children) => next.extend(
                        children
                            .into_iter()
                            .filter(|c| glob(elem, &c.name))
                            .map(|c| format!("{prefix}/{}", c.name)),
                    ),
                    Err(e) if e.is_no_node() => {}
                    Err(e) => return Err(e),
                }
            } else {
                next.push(format!("{prefix}/{elem}"));
            }
        }
        current = next;
    }
    Ok(current
        .into_iter()
        .map(|p| if p.is_empty() { "/".into() } else { p })
        .collect())
}

/// Every non-ephemeral file under `dir`, depth first.
pub(crate) async fn walk(conn: &dyn Conn, dir: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.trim_end_matches('/').to_string()];
    while let Some(d) = stack.pop() {
        let entries = match conn
            .list_dir(if d.is_empty() { "/" } else { &d }, true)
            .await
        {
            Ok(e) => e,
            Err(e) if e.is_no_node() => continue,
            Err(e) => return Err(e),
        };
        for e in entries.into_iter().rev() {
            if e.ephemeral {
                continue;
            }
            let child = format!("{d}/{}", e.name);
            match e.entry_type {
                DirEntryType::Directory => stack.push(child),
                DirEntryType::File => {
                    out.push(child.clone());
                    // A ZooKeeper node can be a file and have children.
                    if conn.list_dir(&child, false).await.is_ok() {
                        stack.push(child);
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

async fn topo_cat(
    conn: &dyn Conn,
    paths: &[String],
    decode_proto: bool,
    decode_proto_json: bool,
    long: bool,
) -> Result<()> {
    let mut json_items = Vec::new();
    let mut stdout = std::io::stdout().lock();
    for pattern in paths {
        let resolved = resolve(conn, pattern).await?;
        if resolved.is_empty() {
            return Err(TopoError::NoNode(pattern.clone()));
        }
        for p in resolved {
            let (bytes, version) = conn.get(&p).await?;
            if decode_proto_json {
                let mut v = match message_type_for_path(&p) {
                    Some(t) => to_json(&bytes, t, JsonForm::Pretty)?,
                    None => {
                        return Err(TopoError::invalid(format!(
                            "no record type is known for {p}"
                        )))
                    }
                };
                if let (true, Value::Object(m)) = (long, &mut v) {
                    m.insert("__path".into(), Value::String(p.clone()));
                    m.insert("__version".into(), Value::String(version.to_string()));
                }
                json_items.push(v);
                continue;
            }
            if long {
                let _ = writeln!(stdout, "path={p} version={version}");
            }
            if decode_proto {
                let _ = writeln!(stdout, "{}", decode_content(&p, &bytes, false)?);
            } else {
                let _ = stdout.write_all(&bytes);
                if long {
                    let _ = writeln!(stdout);
                }
            }
        }
    }
    if decode_proto_json {
        print(&Value::Array(json_items));
    }
    Ok(())
}

/// Lists `dir`; with `recursive`, each directory's subtree right after its entry.
async fn topo_ls(conn: &dyn Conn, dir: &str, long: bool, recursive: bool, top: bool) -> Result<()> {
    let dir = dir.trim_end_matches('/');
    let entries = match conn
        .list_dir(if dir.is_empty() { "/" } else { dir }, true)
        .await
    {
        Ok(e) => e,
        // Nothing below: an empty listing, except for a named directory that does not exist.
        Err(e) if e.is_no_node() && (!top || dir.is_empty()) => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in &entries {
        let full = format!("{dir}/{}", e.name);
        let name = if recursive {
            full.as_str()
        } else {
            e.name.as_str()
        };
        if long {
            let kind = if e.entry_type == DirEntryType::Directory {
                "d"
            } else {
                "-"
            };
            let eph = if e.ephemeral { "e" } else { "-" };
            let version = if e.entry_type == DirEntryType::File {
                conn.get(&full)
                    .await
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_else(|_| "-".into())
            } else {
                "-".into()
            };
            crate::out!("{kind}{eph} {version:>12} {name}");
        } else {
            crate::out!("{name}");
        }
        if recursive && e.entry_type == DirEntryType::Directory {
            Box::pin(topo_ls(conn, &full, long, true, false)).await?;
        }
    }
    Ok(())
}

async fn watch(conn: Arc<dyn Conn>, path: &str, recursive: bool) -> Result<ExitCode> {
    let describe = |p: &str, bytes: &[u8]| {
        decode_content(p, bytes, true)
            .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
    };
    if recursive {
        let (initial, mut changes) = conn.watch_recursive(path).await?;
        for c in &initial {
            if let Some(d) = &c.data {
                crate::out!(
                    "{} version={} {}",
                    c.path,
                    d.version,
                    describe(&c.path, &d.contents)
                );
            }
        }
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                item = changes.next() => match item {
                    Some(Ok(c)) => match c.data {
                        Some(d) => crate::out!("{} version={} {}", c.path, d.version, describe(&c.path, &d.contents)),
                        None => crate::out!("{} deleted", c.path),
                    },
                    Some(Err(e)) => return Err(e),
                    None => return Ok(ExitCode::SUCCESS),
                },
            }
        }
    }
    let (current, mut changes) = conn.watch(path).await?;
    crate::out!(
        "version={} {}",
        current.version,
        describe(path, &current.contents)
    );
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            item = changes.next() => match item {
                Some(Ok(d)) => crate::out!("version={} {}", d.version, describe(path, &d.contents)),
                Some(Err(e)) if e.is_no_node() => {
                    crate::out!("deleted");
                    return Ok(ExitCode::SUCCESS);
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(ExitCode::SUCCESS),
            },
        }
    }
}

/// Refuses a recursive delete of the root or of one whole top-level directory
/// (`/keyspaces`, `/cells`, `/tablets`…) unless `--force`.
fn refuse_general_path(path: &str, force: bool) -> Result<()> {
    let depth = path.split('/').filter(|e| !e.is_empty()).count();
    if depth < 2 && !force {
        return Err(TopoError::invalid(format!(
            "refusing to delete everything under {path:?}: that is the root or a whole \
             top-level directory of the topology; name a deeper path, or pass --force"
        )));
    }
    Ok(())
}

/// What a recursive delete will remove, for the confirmation.
fn removal_summary(cell: &str, files: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut text = format!("This deletes {} files in cell {cell}:", files.len());
    for f in files.iter().take(SHOWN) {
        text.push_str(&format!("\n  {f}"));
    }
    if files.len() > SHOWN {
        text.push_str(&format!("\n  … and {} more", files.len() - SHOWN));
    }
    text
}

pub(crate) async fn run(ts: &Server, command: Command) -> Result<ExitCode> {
    match command {
        Command::TopoCat {
            cell,
            decode_proto,
            decode_proto_json,
            long,
            paths,
        } => {
            topo_cat(
                ts.conn_for_cell(&cell).await?.as_ref(),
                &paths,
                decode_proto,
                decode_proto_json,
                long,
            )
            .await?
        }
        Command::TopoLs {
            cell,
            long,
            recursive,
            path,
        } => {
            topo_ls(
                ts.conn_for_cell(&cell).await?.as_ref(),
                &path,
                long,
                recursive,
                true,
            )
            .await?
        }
        Command::TopoCp {
            cell,
            to_topo,
            raw,
            src,
            dst,
        } => {
            let conn = ts.conn_for_cell(&cell).await?;
            if to_topo {
                let bytes = read_file(std::path::Path::new(&src))?;
                check_record_bytes(&dst, &bytes, &src, raw)?;
                conn.update(&dst, &bytes, None).await?;
            } else {
                let (bytes, _) = conn.get(&src).await?;
                write_file(std::path::Path::new(&dst), &bytes)?;
            }
        }
        Command::TopoRm {
            cell,
            recursive,
            force,
            yes,
            paths,
        } => {
            let conn = ts.conn_for_cell(&cell).await?;
            if !recursive {
                for p in &paths {
                    conn.delete(p, None).await?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            let mut files = Vec::new();
            for p in &paths {
                refuse_general_path(p, force)?;
                let mut under = walk(conn.as_ref(), p).await?;
                if conn.get_opt(p).await?.is_some() {
                    under.push(p.clone());
                }
                if under.is_empty() {
                    return Err(TopoError::NoNode(p.clone()));
                }
                files.extend(under);
            }
            confirm(&removal_summary(&cell, &files), yes)?;
            for f in files {
                match conn.delete(&f, None).await {
                    Err(e) if !e.is_no_node() => return Err(e),
                    _ => {}
                }
            }
        }
        Command::Cat { cell, decode, path } => {
            let (bytes, _) = ts.conn_for_cell(&cell).await?.get(&path).await?;
            if decode {
                crate::out!("{}", decode_content(&path, &bytes, false)?);
            } else {
                let _ = std::io::stdout().write_all(&bytes);
            }
        }
        Command::Stat { cell, path } => {
            let (bytes, version) = ts.conn_for_cell(&cell).await?.get(&path).await?;
            crate::out!("path: {path}\nversion: {version}\nsize: {}", bytes.len());
            if let Some(t) = message_type_for_path(&path) {
                crate::out!("type: {t}");
            }
        }
        Command::Touch { cell, path } => {
            match ts.conn_for_cell(&cell).await?.create(&path, b"").await {
                Err(e) if !e.is(ErrorKind::NodeExists) => return Err(e),
                _ => {}
            }
        }
        Command::Watch {
            cell,
            recursive,
            path,
        } => return watch(ts.conn_for_cell(&cell).await?, &path, recursive).await,
        Command::Wait {
            cell,
            deleted,
            timeout,
            path,
        } => {
            let conn = ts.conn_for_cell(&cell).await?;
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let exists = conn.get_opt(&path).await?.is_some();
                if exists != deleted {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    let what = if deleted { "be deleted" } else { "exist" };
                    return Err(TopoError::Timeout(format!(
                        "{path} did not {what} within {timeout:?}"
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        other => unreachable!("not a raw command: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("*", "abc"));
        assert!(glob("zone?", "zone1"));
        assert!(!glob("zone?", "zone12"));
        assert!(glob("c*r", "customer"));
        assert!(!glob("c*x", "customer"));
    }
}
