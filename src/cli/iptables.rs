//! Removing the router's iptables rules for `weave reset`, through `crate::iptables`.
//!
//! Rather than replaying a fixed list (which would drift from what the router installs), it
//! lists each table with `-S` and deletes what belongs to Weave: rules in built-in chains that
//! mention `weave`/`WEAVE` or guard the control port, then every `WEAVE*` chain.

use crate::iptables::split_rule;
use crate::{Error, ErrorKind, Result};

const TABLES: [&str; 3] = ["filter", "nat", "raw"];
/// The router's control port, whose INPUT protection rule names no Weave chain.
const CONTROL_PORT_MATCH: &str = "--dport 6784";

/// What to run against one table, in order: rule deletions, chain flushes, chain deletions.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub commands: Vec<Vec<String>>,
}

/// Builds the deletion commands (arguments after `iptables -w -t <table>`) from `-S` output.
pub fn plan_for(listing: &str) -> Plan {
    let mut deletions = Vec::new();
    let mut chains = Vec::new();
    for line in listing.lines() {
        let Some(words) = split_rule(line) else {
            continue;
        };
        match words.first().map(String::as_str) {
            Some("-N") if words.len() == 2 && is_weave_chain(&words[1]) => {
                chains.push(words[1].clone())
            }
            Some("-A")
                if words.len() > 2 && !is_weave_chain(&words[1]) && belongs_to_weave(line) =>
            {
                let mut d = words.clone();
                d[0] = "-D".to_string();
                deletions.push(d);
            }
            _ => {}
        }
    }
    let mut commands = deletions;
    commands.extend(chains.iter().map(|c| vec!["-F".to_string(), c.clone()]));
    commands.extend(chains.iter().map(|c| vec!["-X".to_string(), c.clone()]));
    Plan { commands }
}

fn is_weave_chain(chain: &str) -> bool {
    chain.starts_with("WEAVE")
}

fn belongs_to_weave(line: &str) -> bool {
    line.to_ascii_lowercase().contains("weave") || line.contains(CONTROL_PORT_MATCH)
}

/// Deletes Weave's rules and chains from the filter and nat tables of the current netns.
/// Missing rules or chains are fine; a missing `iptables` binary means nothing to clean.
pub fn remove_weave_rules() -> Result<()> {
    let mut errors = crate::error::ErrorList::default();
    for table in TABLES {
        let listing = match iptables(table, &["-S".to_string()]) {
            Ok(out) => out,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                errors.0.push(e);
                continue;
            }
        };
        for args in plan_for(&listing).commands {
            if let Err(e) = iptables(table, &args) {
                if !is_absent(&e) {
                    errors.0.push(e);
                }
            }
        }
    }
    errors.into_result()
}

fn is_absent(e: &Error) -> bool {
    let m = e.message();
    m.contains("does not exist") || m.contains("No chain/target/match") || m.contains("Bad rule")
}

/// `iptables -w 10 -t TABLE ARGS...`: stdout, or an error carrying stderr.
fn iptables(table: &str, args: &[String]) -> Result<String> {
    let mut all = vec!["-t", table];
    all.extend(args.iter().map(String::as_str));
    crate::iptables::run(&all)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"-P INPUT ACCEPT
-P FORWARD DROP
-N WEAVE-EXPOSE
-N DOCKER
-A INPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 6784 -m addrtype ! --src-type LOCAL -m comment --comment "Block non-local access to \"Weave\" control port" -j DROP
-A INPUT -i eth0 -j ACCEPT
-A FORWARD -i weave -o weave -j ACCEPT
-A FORWARD -o weave -j WEAVE-EXPOSE
-A FORWARD -o docker0 -j DOCKER
-A WEAVE-EXPOSE -d 10.32.0.0/12 -j ACCEPT
"#;

    #[test]
    fn quoted_comment_is_one_word() {
        let w = split_rule(r#"-A INPUT -m comment --comment "a \"b\" c" -j DROP"#).unwrap();
        assert_eq!(
            w,
            [
                "-A",
                "INPUT",
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "DROP"
            ]
        );
        assert!(split_rule("-A X \"open").is_none());
    }

    #[test]
    fn plan_deletes_weave_rules_then_chains() {
        let plan = plan_for(LISTING);
        let cmds: Vec<String> = plan.commands.iter().map(|c| c.join(" ")).collect();
        assert_eq!(cmds.len(), 5, "{cmds:#?}");
        assert!(cmds[0].starts_with("-D INPUT -d 127.0.0.1/32"));
        assert!(cmds[0].contains("Block non-local access to \"Weave\" control port"));
        assert_eq!(cmds[1], "-D FORWARD -i weave -o weave -j ACCEPT");
        assert_eq!(cmds[2], "-D FORWARD -o weave -j WEAVE-EXPOSE");
        assert_eq!(cmds[3], "-F WEAVE-EXPOSE");
        assert_eq!(cmds[4], "-X WEAVE-EXPOSE");
    }
}
