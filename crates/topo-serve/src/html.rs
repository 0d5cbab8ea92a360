//! Server-rendered HTML: the page frame and the content of each page. The page's script
//! only swaps in fresh content when the event stream says something changed.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::model::{FileEntry, FileView, LocksView, Overview, ShardView};

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a query parameter value.
fn q(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = r#"
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;align-items:baseline}
header a{color:#cfe0ff;text-decoration:none}header b{font-size:1.2em}
main{padding:1em 1.2em}h2{margin:1.2em 0 .4em;font-size:1.1em}
table{border-collapse:collapse;background:#fff;margin-bottom:.6em}
td,th{border:1px solid #d5d9e0;padding:.25em .6em;text-align:left;vertical-align:top;font-size:.92em}
th{background:#eef1f5}.bad{color:#b00020;font-weight:600}.bad-row{background:#ffe9ec}
.ok{color:#0a7a32}.muted{color:#6b7280}pre{background:#fff;border:1px solid #d5d9e0;padding:.6em;overflow:auto}
#banner{display:none;background:#b00020;color:#fff;padding:.5em 1.2em}
#banner.on{display:block}textarea{width:100%;min-height:20em;font-family:monospace}
.msg{padding:.4em;margin:.4em 0}.chip{display:inline-block;background:#e8eefc;border-radius:.8em;padding:0 .6em;margin:0 .2em}
"#;

const SCRIPT: &str = r#"
(function(){
  const main=document.getElementById('content'), banner=document.getElementById('banner');
  let busy=false, again=false, flash='';
  function show(msg){banner.textContent=msg;banner.className='on';}
  function hide(){banner.textContent='';banner.className='';}
  // Never replace an edit in progress; say that the page is behind instead.
  function editing(){
    const ed=document.getElementById('editor');
    if(!ed||ed.value===ed.defaultValue)return false;
    const m=document.getElementById('save-msg');
    if(m&&!m.textContent){m.className='msg muted';m.textContent='The topology changed while you were editing; your edit is kept. Reload to see the changes.';}
    return true;
  }
  async function refresh(){
    if(busy){again=true;return;}
    if(editing())return;
    busy=true;
    try{
      const u=new URL(location.href);u.searchParams.set('fragment','1');
      const r=await fetch(u,{cache:'no-store'});
      const t=await r.text();
      // An edit may have begun while the page was being fetched.
      if(r.ok&&editing()){}
      else if(r.ok){
        main.innerHTML=t;document.body.dataset.updated=String(Date.now());
        // Keep the outcome of a save visible across the refresh it causes.
        const m=document.getElementById('save-msg');
        if(m&&flash){m.className='msg ok';m.textContent=flash;}
        flash='';
      }
      else if(r.status===503){show('Lost connection to the topology ('+(r.headers.get('x-topo-error')||'unavailable')+'); showing the last known data.');}
    }catch(e){show('Lost connection to topo serve; showing the last known data.');}
    busy=false;
    if(again){again=false;refresh();}
  }
  const es=new EventSource('/events');
  es.addEventListener('change',()=>refresh());
  es.addEventListener('status',e=>{
    const s=JSON.parse(e.data);const lost=Object.entries(s.lost||{});
    if(lost.length===0){hide();refresh();}
    else show('Lost connection to the topology ('+lost.map(([c,m])=>c+': '+m).join('; ')+'); showing the last known data.');
  });
  es.onerror=()=>show('Lost connection to topo serve; showing the last known data.');
  window.topoSave=async function(btn){
    const cell=btn.dataset.cell, path=btn.dataset.path, version=btn.dataset.version;
    const out=document.getElementById('save-msg');
    const body=document.getElementById('editor').value;
    const u='/api/file?cell='+encodeURIComponent(cell)+'&path='+encodeURIComponent(path)+'&version='+encodeURIComponent(version);
    const r=await fetch(u,{method:'PUT',headers:{'content-type':'application/json'},body});
    const j=await r.json().catch(()=>({}));
    out.className='msg '+(r.ok?'ok':'bad');
    out.textContent=r.ok?('Saved: now version '+j.version+'.'):(j.error||('HTTP '+r.status));
    if(r.ok){flash=out.textContent;document.getElementById('editor').defaultValue=body;refresh();}
  };
})();
"#;

/// The whole page: navigation, the connection banner, `content`, and the live script.
pub fn page(title: &str, content: &str, banner: Option<&str>) -> String {
    let banner_html = match banner {
        Some(b) => format!(r#"<div id="banner" class="on">{}</div>"#, esc(b)),
        None => r#"<div id="banner"></div>"#.to_string(),
    };
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title} · Toposphere</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{STYLE}</style></head>
<body><header><b>Toposphere</b><a href="/">Overview</a><a href="/tree">Tree</a><a href="/locks">Locks and elections</a><a href="/metrics">Metrics</a></header>
{banner_html}<main id="content">{content}</main><script>{SCRIPT}</script></body></html>"#,
        title = esc(title)
    )
}

fn shard_table(out: &mut String, shards: &[ShardView]) {
    out.push_str("<table id=\"shards\"><tr><th>keyspace</th><th>shard</th><th>key range</th><th>primary</th><th>primary serving</th><th>tablet controls</th><th>version</th></tr>");
    for s in shards {
        let _ = write!(
            out,
            "<tr><td>{ks}</td><td class=\"shard\">{sh}</td><td>{kr}</td><td>{p}</td><td>{serving}</td><td>{tc}</td><td>{v}</td></tr>",
            ks = esc(&s.keyspace),
            sh = esc(&s.shard),
            kr = esc(if s.key_range.is_empty() { "(all)" } else { &s.key_range }),
            p = s.primary.as_deref().map(esc).unwrap_or_else(|| "<span class=\"bad\">none</span>".into()),
            serving = if s.primary_serving { "<span class=\"ok\">yes</span>" } else { "<span class=\"bad\">no</span>" },
            tc = s.tablet_controls.iter().map(|t| esc(t)).collect::<Vec<_>>().join("<br>"),
            v = esc(&s.version),
        );
    }
    out.push_str("</table>");
}

/// The overview page's content.
pub fn overview(o: &Overview) -> String {
    let mut out = String::from("<h2>Cells</h2><table id=\"cells\"><tr><th>cell</th><th>server address</th><th>root</th><th>reachable</th><th>latency</th></tr>");
    for c in &o.cells {
        let _ = write!(
            out,
            "<tr{row}><td>{n}</td><td>{a}</td><td>{r}</td><td>{ok}</td><td>{l:.1} ms</td></tr>",
            row = if c.reachable {
                ""
            } else {
                " class=\"bad-row\""
            },
            n = esc(&c.name),
            a = esc(&c.server_address),
            r = esc(&c.root),
            ok = if c.reachable {
                "<span class=\"ok\">yes</span>".to_string()
            } else {
                format!(
                    "<span class=\"bad\">no: {}</span>",
                    esc(c.error.as_deref().unwrap_or(""))
                )
            },
            l = c.latency_ms,
        );
    }
    out.push_str("</table><h2>Keyspaces</h2><p id=\"keyspaces\">");
    for ks in &o.keyspaces {
        let _ = write!(
            out,
            "<a class=\"chip keyspace\" href=\"/keyspace/{}\">{}</a>",
            q(ks),
            esc(ks)
        );
    }
    if o.keyspaces.is_empty() {
        out.push_str("<span class=\"muted\">none</span>");
    }
    out.push_str("</p><h2>Shards</h2>");
    shard_table(&mut out, &o.shards);
    out.push_str("<h2>Tablets</h2><table id=\"tablets\"><tr><th>cell</th><th>alias</th><th>keyspace/shard</th><th>type</th><th>host</th><th>ports</th></tr>");
    for t in &o.tablets {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&t.cell),
            esc(&t.alias),
            esc(&t.keyspace),
            esc(&t.shard),
            esc(&t.tablet_type),
            esc(&t.hostname),
            esc(&t
                .ports
                .iter()
                .map(|(n, p)| format!("{n}:{p}"))
                .collect::<Vec<_>>()
                .join(" "))
        );
    }
    out.push_str("</table><h2>Serving graph</h2><table id=\"serving\"><tr><th>cell</th><th>keyspace</th><th>partitions</th><th>problems</th></tr>");
    for s in &o.serving {
        let parts = s
            .partitions
            .iter()
            .map(|p| format!("{}: {}", esc(&p.served_type), esc(&p.shards.join(" "))))
            .collect::<Vec<_>>()
            .join("<br>");
        let _ = write!(
            out,
            "<tr{row}><td>{}</td><td>{}</td><td>{parts}</td><td>{prob}</td></tr>",
            esc(&s.cell),
            esc(&s.keyspace),
            row = if s.problem.is_some() {
                " class=\"bad-row\""
            } else {
                ""
            },
            prob = s
                .problem
                .as_deref()
                .map(|p| format!("<span class=\"bad\">{}</span>", esc(p)))
                .unwrap_or_else(|| "<span class=\"ok\">ok</span>".into()),
        );
    }
    out.push_str("</table>");
    out
}

/// A keyspace page's content: its record and its shards.
pub fn keyspace(name: &str, record: &FileView, shards: &[ShardView]) -> String {
    let mut out = format!("<h2>Keyspace {}</h2>", esc(name));
    out.push_str("<h2>Shards</h2>");
    shard_table(&mut out, shards);
    out.push_str("<h2>Record</h2>");
    out.push_str(&file_body(record));
    out
}

/// The tree page's content: every file of every cell, with version and size.
pub fn tree(cells: &BTreeMap<String, Result<Vec<FileEntry>, String>>) -> String {
    let mut out = String::new();
    for (cell, files) in cells {
        let _ = write!(out, "<h2>{}</h2>", esc(cell));
        match files {
            Err(e) => {
                let _ = write!(
                    out,
                    "<p class=\"bad\">cannot read {}: {}</p>",
                    esc(cell),
                    esc(e)
                );
            }
            Ok(files) => {
                out.push_str(
                    "<table class=\"tree\"><tr><th>path</th><th>version</th><th>size</th></tr>",
                );
                for f in files {
                    let _ = write!(
                        out,
                        "<tr><td><a href=\"/tree?cell={}&amp;path={}\">{}</a></td><td>{}</td><td>{}</td></tr>",
                        q(cell),
                        q(&f.path),
                        esc(&f.path),
                        esc(&f.version),
                        f.size
                    );
                }
                out.push_str("</table>");
            }
        }
    }
    out
}

fn file_body(f: &FileView) -> String {
    let mut out = format!(
        "<p>cell <b>{}</b> · path <b>{}</b> · version <b id=\"version\">{}</b> · {} bytes{}</p>",
        esc(&f.cell),
        esc(&f.path),
        esc(&f.version),
        f.size,
        f.record_type
            .as_deref()
            .map(|t| format!(" · {}", esc(t)))
            .unwrap_or_default()
    );
    if let Some(e) = &f.decode_error {
        let _ = write!(out, "<p class=\"bad\">does not decode: {}</p>", esc(e));
    }
    if let Some(j) = &f.json {
        let _ = write!(
            out,
            "<h3>JSON</h3><pre id=\"json\">{}</pre>",
            esc(&serde_json::to_string_pretty(j).unwrap_or_default())
        );
    }
    if let Some(t) = &f.prototext {
        let _ = write!(
            out,
            "<h3>Protobuf text</h3><pre id=\"prototext\">{}</pre>",
            esc(t)
        );
    }
    if let (Some(t), None) = (&f.text, &f.json) {
        let _ = write!(out, "<h3>Text</h3><pre id=\"text\">{}</pre>", esc(t));
    }
    if let Some(h) = &f.hex {
        let _ = write!(out, "<h3>Hex</h3><pre id=\"hex\">{}</pre>", esc(h));
    }
    out
}

/// A file page's content, with an editor when writes are allowed and the file is a record.
pub fn file(f: &FileView, allow_writes: bool) -> String {
    let mut out = file_body(f);
    if allow_writes && f.json.is_some() && f.record_type.is_some() {
        let _ = write!(
            out,
            "<h3>Edit</h3><textarea id=\"editor\" spellcheck=\"false\">{}</textarea>\
             <button id=\"save\" data-cell=\"{}\" data-path=\"{}\" data-version=\"{}\" onclick=\"topoSave(this)\">Save (if still version {})</button><div id=\"save-msg\"></div>",
            esc(&serde_json::to_string_pretty(f.json.as_ref().unwrap_or(&serde_json::Value::Null)).unwrap_or_default()),
            esc(&f.cell),
            esc(&f.path),
            esc(&f.version),
            esc(&f.version),
        );
    } else if !allow_writes {
        out.push_str("<p class=\"muted\">Read-only: start <code>topo serve --allow-writes</code> to edit.</p>");
    }
    out
}

/// The locks and elections page's content.
pub fn locks(v: &LocksView) -> String {
    let mut out = String::from("<h2>Locks</h2>");
    if v.locks.is_empty() {
        out.push_str("<p class=\"muted\" id=\"no-locks\">No lock is held.</p>");
    } else {
        out.push_str("<table id=\"locks\"><tr><th>directory</th><th>state</th><th>action</th><th>host</th><th>user</th><th>since</th><th>held for</th><th>token (version)</th></tr>");
        for l in &v.locks {
            let _ = write!(
                out,
                "<tr{row}><td>{}</td><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{held}</td><td>{}</td></tr>",
                esc(&l.dir),
                esc(&l.action),
                esc(&l.host),
                esc(&l.user),
                esc(l.since.as_deref().unwrap_or("?")),
                esc(&l.token),
                row = if l.stale { " class=\"bad-row\"" } else { "" },
                state = match (l.holder, l.stale) {
                    (true, true) => "<span class=\"bad\">held, STALE</span>",
                    (true, false) => "held",
                    (false, _) => "waiting",
                },
                held = l.held_secs.map(|s| format!("{s} s")).unwrap_or_default(),
            );
        }
        out.push_str("</table>");
    }
    out.push_str("<h2>Elections</h2>");
    if v.elections.is_empty() {
        out.push_str("<p class=\"muted\">No election is running.</p>");
    } else {
        out.push_str("<table id=\"elections\"><tr><th>election</th><th>leader</th><th>participants</th></tr>");
        for e in &v.elections {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&e.name),
                esc(&e.leader),
                esc(&e.participants.join(", "))
            );
        }
        out.push_str("</table>");
    }
    out
}

/// The sign-in page: a form posting the token to `/login` (no live script: nothing else is
/// allowed before signing in).
pub fn login(error: Option<&str>) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in · Toposphere</title><style>{STYLE}</style></head>
<body><header><b>Toposphere</b></header><main><h2>Sign in</h2>{}<form method="post" action="/login">
<label>Token <input type="password" name="token" autocomplete="current-password" autofocus></label> <button>Sign in</button></form></main></body></html>"#,
        error
            .map(|e| format!("<p class=\"bad\">{}</p>", esc(e)))
            .unwrap_or_default()
    )
}
