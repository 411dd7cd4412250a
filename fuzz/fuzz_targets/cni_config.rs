//! The plugin's stdin and environment: `NetConf::parse`, `CmdArgs::from_env` and `CNI_ARGS`.
//! Input: `KEY=VALUE` lines (the environment), a NUL byte, then the network config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use weave::cni::env::parse_cni_args;
use weave::cni::{CmdArgs, NetConf};

fuzz_target!(|data: &[u8]| {
    let (env_part, conf) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let env_text = String::from_utf8_lossy(env_part);
    let env: HashMap<String, String> = env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

    if let Ok(nc) = NetConf::parse(conf) {
        let _ = nc.result_version();
    }
    if let Ok(args) = CmdArgs::from_env(&|k: &str| env.get(k).cloned()) {
        // Whatever passed validation is safe to use as a path segment and an interface name.
        assert!(!args.container_id.contains('/'));
        assert!(args.ifname.len() <= 15);
        let _ = args.arg("IgnoreUnknown");
    }
    if let Ok(pairs) = parse_cni_args(&env_text) {
        for (k, _) in pairs {
            assert!(!k.is_empty() && !k.contains(';') && !k.contains('='));
        }
    }
});
