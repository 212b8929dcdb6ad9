//! `INFO [section…]`: Redis's `name:value` text, with the sections tools read
//! (server, clients, stats with keyspace hits and misses, keyspace: one database per
//! group) and a `peercache` section: members, loads from the source and from peers.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::admin::REDIS_VERSION;
use super::frame::Frame;
use super::server::Shared;
use crate::group::GroupStats;

const SECTIONS: [&str; 5] = ["server", "clients", "stats", "keyspace", "peercache"];

pub(super) fn info(shared: &Shared, args: &[Bytes]) -> Frame {
    let asked: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = asked.is_empty()
        || asked
            .iter()
            .any(|a| a == "all" || a == "everything" || a == "default");
    let stats: Vec<(String, GroupStats)> = shared
        .dbs
        .iter()
        .map(|g| (g.name().to_owned(), g.stats()))
        .collect();
    let mut text = String::new();
    for section in SECTIONS {
        if !all && !asked.iter().any(|a| a == section) {
            continue;
        }
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        let mut title = section.to_owned();
        title[..1].make_ascii_uppercase();
        let _ = write!(text, "# {title}\r\n");
        let lines = match section {
            "server" => server(shared),
            "clients" => clients(shared),
            "stats" => counts(shared, &stats),
            "keyspace" => keyspace(&stats),
            _ => peercache(shared, &stats),
        };
        for (name, value) in lines {
            let _ = write!(text, "{name}:{value}\r\n");
        }
    }
    Frame::bulk(text)
}

type Lines = Vec<(String, String)>;

fn line(name: &str, value: impl ToString) -> (String, String) {
    (name.to_owned(), value.to_string())
}

fn server(shared: &Shared) -> Lines {
    vec![
        line("redis_version", REDIS_VERSION),
        line("peercache_version", env!("CARGO_PKG_VERSION")),
        line("redis_mode", "standalone"),
        line("process_id", std::process::id()),
        line("uptime_in_seconds", shared.started.elapsed().as_secs()),
    ]
}

fn clients(shared: &Shared) -> Lines {
    vec![
        line("connected_clients", shared.counts.connected.load(Relaxed)),
        line("maxclients", shared.config.max_connections),
    ]
}

fn counts(shared: &Shared, stats: &[(String, GroupStats)]) -> Lines {
    let sum = |f: fn(&GroupStats) -> u64| stats.iter().map(|(_, s)| f(s)).sum::<u64>();
    let (gets, hits) = (sum(|s| s.gets), sum(|s| s.hits));
    vec![
        line(
            "total_connections_received",
            shared.counts.connections.load(Relaxed),
        ),
        line(
            "total_commands_processed",
            shared.counts.commands.load(Relaxed),
        ),
        line("rejected_connections", shared.counts.refused.load(Relaxed)),
        line("keyspace_hits", hits),
        line("keyspace_misses", gets.saturating_sub(hits)),
        line("evicted_keys", sum(|s| s.store.evictions)),
        line("expired_keys", sum(|s| s.store.expirations)),
    ]
}

fn keyspace(stats: &[(String, GroupStats)]) -> Lines {
    (stats.iter().enumerate())
        .map(|(i, (name, s))| {
            let value = format!("keys={},group={name}", s.store.items);
            (format!("db{i}"), value)
        })
        .collect()
}

fn peercache(shared: &Shared, stats: &[(String, GroupStats)]) -> Lines {
    let view = shared.picker.view();
    let members: Vec<&str> = view.ring.members().iter().map(|m| m.id.as_str()).collect();
    let mut lines = vec![
        line("node", shared.picker.self_id()),
        line("members", members.len()),
        line("member_ids", members.join(",")),
    ];
    for (name, s) in stats {
        for counter in GroupStats::COUNTERS {
            lines.push(line(&format!("{name}_{}", counter.name), (counter.read)(s)));
        }
    }
    lines
}
