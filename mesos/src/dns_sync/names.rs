//! Mesos-DNS' naming, so clients that know Mesos-DNS find tasks the same way:
//! `<task>.<framework>.<domain>`, the task name mangled into one RFC 1123 label and the
//! framework name into one label per dot-separated part. Mangling: letters lowercased,
//! letters and digits kept, `-`, `.` and `_` become `-`, anything else is dropped; leading
//! dashes go; at most 63 bytes, and dashes that would end the label are replaced by what
//! follows them.

use weave::dns::name::{in_domain, normalize};

/// One RFC 1123 label from `s` (empty when nothing usable is left).
pub fn label(s: &str) -> String {
    const MAX: usize = 63;
    let mapped: String = s
        .chars()
        .filter_map(|c| match c {
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            'a'..='z' | '0'..='9' => Some(c),
            '-' | '.' | '_' => Some('-'),
            _ => None,
        })
        .collect();
    let trimmed = mapped.trim_start_matches('-');
    let size = trimmed.len().min(MAX);
    let head = trimmed[..size].trim_end_matches('-');
    if head.len() == size {
        return head.to_string();
    }
    // The cut left dashes at the end: take as many characters from after the dashes.
    let tail = trimmed[size..].trim_start_matches('-');
    let take = tail.len().min(size - head.len());
    let out = format!("{head}{}", &tail[..take]);
    out.trim_end_matches('-').to_string()
}

/// The framework part: one label per dot-separated part, empty parts dropped.
pub fn framework_part(s: &str) -> String {
    s.split('.')
        .map(label)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

/// `<task>.<framework>.<domain>`, or `None` when either part mangles to nothing or the
/// name is too long. `domain` is normalised (`weave.local.`).
pub fn task_fqdn(task: &str, framework: &str, domain: &str) -> Option<String> {
    let (t, f) = (label(task), framework_part(framework));
    if t.is_empty() || f.is_empty() {
        return None;
    }
    normalize(&format!("{t}.{f}.{domain}")).ok()
}

/// The name a `weave.dns.name` label asks for: a name under the domain as given, anything
/// else with the domain appended (`db` → `db.weave.local.`). `None` if it is not a valid
/// DNS name.
pub fn chosen_fqdn(value: &str, domain: &str) -> Option<String> {
    let n = normalize(value).ok()?;
    if in_domain(&n, domain) {
        return Some(n);
    }
    normalize(&format!("{n}{domain}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_mesos_dns() {
        for (input, want) in [
            ("web", "web"),
            ("Web_Server.1", "web-server-1"),
            ("--x--", "x"),
            ("a b/c", "abc"),
            ("ünïcode", "ncode"),
            ("___", ""),
            ("", ""),
        ] {
            assert_eq!(label(input), want, "{input:?}");
        }
        // Long names are cut to 63 bytes; dashes at the cut are replaced by what follows.
        let long = "a".repeat(70);
        assert_eq!(label(&long), "a".repeat(63));
        let dashed = format!("{}---{}", "a".repeat(61), "bcdef");
        assert_eq!(label(&dashed), format!("{}bc", "a".repeat(61)));
    }

    #[test]
    fn task_names_are_task_dot_framework_dot_domain() {
        let d = "weave.local.";
        assert_eq!(
            task_fqdn("web", "marathon", d).unwrap(),
            "web.marathon.weave.local."
        );
        // The task name is one label; the framework keeps its dots as labels.
        assert_eq!(
            task_fqdn("my.task", "My Framework.v2", d).unwrap(),
            "my-task.myframework.v2.weave.local."
        );
        assert_eq!(task_fqdn("!!", "fw", d), None);
        assert_eq!(task_fqdn("t", "..", d), None);
        let huge = vec!["f".repeat(60); 5].join(".");
        assert_eq!(task_fqdn("t", &huge, d), None, "over 253 bytes");
    }

    #[test]
    fn chosen_names_land_in_the_domain() {
        let d = "weave.local.";
        assert_eq!(chosen_fqdn("db", d).unwrap(), "db.weave.local.");
        assert_eq!(chosen_fqdn("DB.weave.local", d).unwrap(), "db.weave.local.");
        assert_eq!(chosen_fqdn("db.prod", d).unwrap(), "db.prod.weave.local.");
        assert_eq!(chosen_fqdn("bad name", d), None);
    }
}
