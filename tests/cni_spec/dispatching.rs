//! The CNI_* environment rules, and `dispatch` end to end with the recording plugin.

use super::*;

// ----- environment -----

fn from_env(env: &HashMap<String, String>) -> Result<CmdArgs> {
    CmdArgs::from_env(&|k| env.get(k).cloned())
}

#[test]
fn every_missing_env_combination_is_reported_at_once() {
    let required: &[(&str, &[&str])] = &[
        (
            "ADD",
            &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
        ),
        (
            "CHECK",
            &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
        ),
        ("DEL", &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"]),
    ];
    for (command, vars) in required {
        for mask in 0u32..(1 << vars.len()) {
            for blank in [false, true] {
                let mut env = full_env(command);
                let mut missing = Vec::new();
                for (i, var) in vars.iter().enumerate() {
                    if mask & (1 << i) != 0 {
                        if blank {
                            env.insert(var.to_string(), String::new());
                        } else {
                            env.remove(*var);
                        }
                        missing.push(*var);
                    }
                }
                let got = from_env(&env);
                if missing.is_empty() {
                    got.unwrap_or_else(|e| panic!("{command}: {e}"));
                    continue;
                }
                let e = got.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Env);
                assert_eq!(
                    e.message(),
                    format!(
                        "required environment variables missing: {}",
                        missing.join(", ")
                    )
                );
            }
        }
    }
}

#[test]
fn del_netns_may_be_empty_and_version_status_gc_need_nothing() {
    let mut env = full_env("DEL");
    env.insert("CNI_NETNS".into(), String::new());
    assert_eq!(from_env(&env).unwrap().netns, None);
    env.remove("CNI_NETNS");
    assert_eq!(from_env(&env).unwrap().netns, None);
    for command in ["VERSION", "STATUS", "GC"] {
        let a = from_env(&env_of(&[("CNI_COMMAND", command)]))
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        assert_eq!(
            (a.container_id.as_str(), a.netns.clone(), a.path.len()),
            ("", None, 0)
        );
    }
    let gc = from_env(&env_of(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/a:/b")])).unwrap();
    assert_eq!(gc.path, [PathBuf::from("/a"), PathBuf::from("/b")]);
}

#[test]
fn command_and_values_are_validated_naming_the_variable() {
    let e = from_env(&env_of(&[])).unwrap_err();
    assert_eq!(
        e.message(),
        "required environment variables missing: CNI_COMMAND"
    );
    let e = from_env(&env_of(&[("CNI_COMMAND", "FROB")])).unwrap_err();
    assert_eq!(
        (e.kind(), e.message()),
        (ErrorKind::Env, "unknown CNI_COMMAND \"FROB\"")
    );

    let cases = [
        ("CNI_CONTAINERID", "-leading-dash"),
        ("CNI_CONTAINERID", "has space"),
        ("CNI_IFNAME", "averyveryverylongname"),
        ("CNI_IFNAME", "eth:0"),
        ("CNI_IFNAME", ".."),
    ];
    for (var, value) in cases {
        let mut env = full_env("ADD");
        env.insert(var.into(), value.into());
        let e = from_env(&env).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Env, "{var}={value}");
        assert!(
            e.message()
                .starts_with(&format!("invalid {var} {value:?}: ")),
            "{e}"
        );
    }
    // Mesos nested containers: dot-joined UUIDs.
    let mut env = full_env("ADD");
    env.insert(
        "CNI_CONTAINERID".into(),
        "5baff64c-d028-47ba-864e-a5ee679fc069.0a1b2c3d-0000-4000-8000-000000000001".into(),
    );
    env.insert(
        "CNI_PATH".into(),
        "/usr/libexec/mesos/cni:/opt/cni/bin".into(),
    );
    let a = from_env(&env).unwrap();
    assert_eq!(a.path.len(), 2);
}

#[test]
fn cni_args_are_parsed_into_pairs() {
    let mut env = full_env("ADD");
    env.insert(
        "CNI_ARGS".into(),
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0".into(),
    );
    let a = from_env(&env).unwrap();
    assert_eq!(
        a.args,
        [
            ("IgnoreUnknown".to_string(), "1".to_string()),
            ("K8S_POD_NAMESPACE".to_string(), "default".to_string()),
            ("K8S_POD_NAME".to_string(), "web-0".to_string()),
        ]
    );
    assert_eq!(a.arg("K8S_POD_NAME"), Some("web-0"));

    env.insert("CNI_ARGS".into(), "IgnoreUnknown=1;oops".into());
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    let (code, out) = run(&env, &fixture("version-0.4.0.json"), &plugin);
    assert_eq!(code, 1);
    assert_error(&out, 4, "0.4.0", "invalid CNI_ARGS");
    assert!(plugin.calls().is_empty());
}

// ----- dispatch -----

#[test]
fn version_needs_no_config() {
    let env = env_of(&[("CNI_COMMAND", "VERSION")]);
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    let all: Vec<&str> = SUPPORTED_VERSIONS.to_vec();
    for (stdin, reported) in [
        (&b""[..], CURRENT_VERSION),
        (br#"{"cniVersion":"0.3.1"}"#, "0.3.1"),
        (br#"{"cniVersion":"42.0.0"}"#, CURRENT_VERSION),
        (b"not json", CURRENT_VERSION),
    ] {
        let (code, out) = run(&env, stdin, &plugin);
        assert_eq!(code, 0);
        assert_eq!(
            one_json(&out),
            json!({"cniVersion": reported, "supportedVersions": all})
        );
    }
    assert!(plugin.calls().is_empty());
}

#[test]
fn add_prints_the_result_in_the_config_version() {
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    for v in SUPPORTED_VERSIONS {
        let (code, out) = run(
            &full_env("ADD"),
            &fixture(&format!("version-{v}.json")),
            &plugin,
        );
        assert_eq!(code, 0, "{out}");
        assert_eq!(one_json(&out), sample_result().encode(v));
    }
    // No cniVersion (a hand-written Mesos .conf): the 0.2.0 shape, labelled 0.2.0.
    let (code, out) = run(
        &full_env("ADD"),
        &fixture("mesos-weave-no-version.json"),
        &plugin,
    );
    assert_eq!(code, 0);
    let v = one_json(&out);
    assert_eq!(v["cniVersion"], "0.2.0");
    assert_eq!(v["ip4"]["ip"], "10.32.0.5/12");
    assert!(v.get("ips").is_none());
    assert_eq!(plugin.calls().len(), SUPPORTED_VERSIONS.len() + 1);
    assert_eq!(
        plugin.calls()[0],
        "ADD 5baff64c-d028-47ba-864e-a5ee679fc069 eth0 weave"
    );
}

#[test]
fn mesos_add_and_del_exactly_as_the_agent_calls() {
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    let id = "779fe970-e07e-42a6-ac44-dd92f5c83aa7";
    let netns = format!("/run/mesos-fixture/mf-h1/work/agents/0/run/isolators/network/cni/{id}/ns");
    let mut env = env_of(&[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", id),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", &netns),
        ("CNI_PATH", "/usr/libexec/mesos/cni:/opt/cni/bin"),
        ("PATH", "/usr/bin:/bin"),
    ]);
    let stdin = fixture("mesos-h1-add.json");
    let (code, out) = run(&env, &stdin, &plugin);
    assert_eq!(code, 0);
    let v = one_json(&out);
    assert_eq!(v["cniVersion"], "0.2.0");
    assert_eq!(
        v["ip4"],
        json!({"ip": "10.32.0.5/12", "gateway": "10.32.0.1", "routes": [{"dst": "0.0.0.0/0"}]})
    );

    env.insert("CNI_COMMAND".into(), "DEL".into());
    let (code, out) = run(&env, &stdin, &plugin);
    assert_eq!((code, out.as_str()), (0, ""));
    assert_eq!(plugin.calls()[1], format!("DEL {id} eth0 mf-net {netns}"));
}

#[test]
fn del_check_status_gc_print_nothing_on_success() {
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    let mut del_env = full_env("DEL");
    del_env.insert("CNI_NETNS".into(), String::new());
    let status_env = env_of(&[("CNI_COMMAND", "STATUS")]);
    let gc_env = env_of(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")]);
    for (env, stdin) in [
        (&del_env, fixture("version-0.3.0.json")),
        (
            &full_env("CHECK"),
            fixture("conflist-member-prevresult.json"),
        ),
        (&status_env, fixture("version-1.1.0.json")),
        (&gc_env, fixture("gc-valid-attachments.json")),
        (&gc_env, fixture("version-1.1.0.json")),
    ] {
        let (code, out) = run(env, &stdin, &plugin);
        assert_eq!((code, out.as_str()), (0, ""));
    }
    assert_eq!(
        plugin.calls(),
        [
            "DEL 5baff64c-d028-47ba-864e-a5ee679fc069 eth0 weave -",
            "CHECK 5baff64c-d028-47ba-864e-a5ee679fc069 eth0 weave",
            "STATUS weave",
            "GC weave [aaa/eth0,bbb/net1]",
            "GC weave []",
        ]
    );
}

#[test]
fn plugin_errors_become_error_json_with_the_config_version() {
    let cases = [
        (ErrorKind::TryAgainLater, 11, "weave launch"),
        (ErrorKind::Router, 100, ""),
        (ErrorKind::NetNs, 8, "not a network namespace"),
        (ErrorKind::Internal, 999, ""),
    ];
    for (kind, code, hint) in cases {
        let plugin = RecordingPlugin::new(Behaviour::Fail(kind));
        let (exit, out) = run(&full_env("ADD"), &fixture("version-0.4.0.json"), &plugin);
        assert_eq!(exit, 1);
        let v = assert_error(
            &out,
            code,
            "0.4.0",
            "allocate IP for \"c1\": connect router: connection refused",
        );
        assert!(v["details"].as_str().unwrap().contains(hint), "{v}");
    }
    let plugin = RecordingPlugin::new(Behaviour::Fail(ErrorKind::Io));
    let (exit, out) = run(&full_env("DEL"), &fixture("version-1.0.0.json"), &plugin);
    assert_eq!(exit, 1);
    assert_error(&out, 102, "1.0.0", "connection refused");
}

#[test]
fn config_errors_are_reported_before_calling_the_plugin() {
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    let (code, out) = run(&full_env("ADD"), &fixture("bad-json.json"), &plugin);
    assert_eq!(code, 1);
    assert_error(&out, 6, CURRENT_VERSION, "decode network config: ");
    let (_, out) = run(
        &full_env("ADD"),
        &fixture("unsupported-version.json"),
        &plugin,
    );
    assert_error(
        &out,
        1,
        CURRENT_VERSION,
        "incompatible CNI version \"9.9.9\"",
    );
    let (_, out) = run(&full_env("ADD"), &fixture("subnet-host-bits.json"), &plugin);
    let v = assert_error(&out, 7, "0.3.0", "host bits");
    assert!(!v["details"].as_str().unwrap().is_empty());
    let (_, out) = run(&full_env("ADD"), b"", &plugin);
    assert_error(&out, 6, CURRENT_VERSION, "decode network config");
    let (_, out) = run(&full_env("GC"), br#"{"cniVersion":"1.1.0","name":"w","type":"weave-net","cni.dev/valid-attachments":[{"ifname":"eth0"}]}"#, &plugin);
    assert_error(&out, 7, "1.1.0", "containerID");
    assert!(plugin.calls().is_empty());
}

#[test]
fn del_with_an_unusable_config_cleans_up_with_defaults() {
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    for name in [
        "bad-json.json",
        "unsupported-version.json",
        "subnet-host-bits.json",
    ] {
        let (code, out) = run(&full_env("DEL"), &fixture(name), &plugin);
        assert_eq!((code, out.as_str()), (0, ""), "{name}");
    }
    // The plugin still ran DEL each time (with weave's defaults), so nothing is left behind.
    assert_eq!(plugin.calls().len(), 3, "{:?}", plugin.calls());
    // Env errors still fail DEL: without a container ID nothing can be released.
    let mut env = full_env("DEL");
    env.remove("CNI_CONTAINERID");
    let (code, out) = run(&env, &fixture("bad-json.json"), &plugin);
    assert_eq!(code, 1);
    assert_error(&out, 4, CURRENT_VERSION, "CNI_CONTAINERID");
}

#[test]
fn env_errors_come_first() {
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    let mut env = full_env("ADD");
    env.remove("CNI_NETNS");
    env.remove("CNI_IFNAME");
    let (code, out) = run(&env, &fixture("bad-json.json"), &plugin);
    assert_eq!(code, 1);
    let v = assert_error(
        &out,
        4,
        CURRENT_VERSION,
        "required environment variables missing: CNI_NETNS, CNI_IFNAME",
    );
    assert_eq!(
        v["msg"],
        "required environment variables missing: CNI_NETNS, CNI_IFNAME"
    );
    let (_, out) = run(
        &env_of(&[("CNI_COMMAND", "frob")]),
        &fixture("version-0.3.1.json"),
        &plugin,
    );
    assert_error(&out, 4, "0.3.1", "unknown CNI_COMMAND \"frob\"");
    assert!(plugin.calls().is_empty());
}

#[test]
fn a_panicking_plugin_still_yields_error_json() {
    let plugin = RecordingPlugin::new(Behaviour::Panic);
    for command in ["ADD", "DEL", "CHECK"] {
        let (code, out) = run(&full_env(command), &fixture("version-1.1.0.json"), &plugin);
        assert_eq!(code, 1);
        assert_error(
            &out,
            999,
            "1.1.0",
            &format!("{command}: plugin panicked: plugin bug"),
        );
    }
}

#[test]
fn unreadable_stdin_is_an_io_error() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("pipe broke"))
        }
    }
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    let env = full_env("ADD");
    let mut out = Vec::new();
    let code = dispatch(&|k| env.get(k).cloned(), &mut Broken, &mut out, &plugin);
    assert_eq!(code, 1);
    assert_error(
        std::str::from_utf8(&out).unwrap(),
        102,
        CURRENT_VERSION,
        "read stdin: pipe broke",
    );
}

#[test]
fn error_codes_table() {
    let table = [
        (ErrorKind::IncompatibleVersion, 1),
        (ErrorKind::Env, 4),
        (ErrorKind::Decode, 6),
        (ErrorKind::InvalidConfig, 7),
        (ErrorKind::NetNs, 8),
        (ErrorKind::TryAgainLater, 11),
        (ErrorKind::Router, 100),
        (ErrorKind::Kernel, 101),
        (ErrorKind::Io, 102),
        (ErrorKind::NotFound, 103),
        (ErrorKind::AlreadyExists, 104),
        (ErrorKind::Internal, 999),
    ];
    for (kind, code) in table {
        assert_eq!(code_for(kind), code);
        let e = CniError::from_error(&Error::new(kind, "what: why"));
        assert_eq!((e.code, e.msg.as_str()), (code, "what: why"));
        assert_eq!(e.to_json("0.2.0")["code"], code);
    }
}

// ----- Mesos reads only the 0.2.0 result shape -----

/// ADD through dispatch with `stdin`; the printed result.
fn add_result(stdin: &[u8]) -> Value {
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    let (code, out) = run(&full_env("ADD"), stdin, &plugin);
    assert_eq!(code, 0, "{out}");
    one_json(&out)
}

#[test]
fn mesos_gets_ip4_even_when_the_conflist_says_1_0_0() {
    // `weave setup`'s 10-weave.conflist as a Mesos agent re-serialises it (keys sorted,
    // args injected): cniVersion 1.0.0, but Mesos parses only `ip4`.
    let v = add_result(&fixture("mesos-weave-conflist.json"));
    assert_eq!(v["cniVersion"], "0.2.0", "{v}");
    assert_eq!(
        v["ip4"],
        json!({"ip": "10.32.0.5/12", "gateway": "10.32.0.1", "routes": [{"dst": "0.0.0.0/0"}]})
    );
    assert_eq!(v["dns"]["nameservers"], json!(["10.96.0.10"]));
    assert!(
        v.get("ips").is_none() && v.get("interfaces").is_none(),
        "{v}"
    );
    assert_eq!(v, sample_result().encode("0.2.0"));
}

#[test]
fn the_same_config_without_mesos_args_keeps_its_version() {
    let mut conf: Value = serde_json::from_slice(&fixture("mesos-weave-conflist.json")).unwrap();
    conf.as_object_mut().unwrap().remove("args");
    let v = add_result(&serde_json::to_vec(&conf).unwrap());
    assert_eq!(v, sample_result().encode("1.0.0"));
    assert!(v.get("ip4").is_none() && v["ips"].is_array(), "{v}");

    // Other args do not make a caller Mesos.
    conf["args"] = json!({"cni": {"labels": []}});
    let v = add_result(&serde_json::to_vec(&conf).unwrap());
    assert_eq!(v["cniVersion"], "1.0.0");
}

#[test]
fn the_mesos_key_alone_selects_the_legacy_shape() {
    // `args["org.apache.mesos"]` without network_info still names Mesos as the caller.
    for version in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let conf = json!({"cniVersion": version, "name": "weave", "type": "weave-net",
                          "args": {"org.apache.mesos": {}}});
        let v = add_result(&serde_json::to_vec(&conf).unwrap());
        assert_eq!(v, sample_result().encode("0.2.0"), "{version}");
    }
    // A legacy version Mesos already understands is kept as written.
    let conf = json!({"cniVersion": "0.1.0", "name": "weave", "type": "weave-net",
                      "args": {"org.apache.mesos": {"network_info": {"name": "weave"}}}});
    let v = add_result(&serde_json::to_vec(&conf).unwrap());
    assert_eq!(v, sample_result().encode("0.1.0"));
}

#[test]
fn result_version_rule_on_parsed_configs() {
    let mesos = NetConf::parse(&fixture("mesos-weave-conflist.json")).unwrap();
    assert!(skel::is_from_mesos(&mesos));
    assert_eq!(skel::result_version_for(&mesos), "0.2.0");
    let plain = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"w","type":"weave-net"}"#).unwrap();
    assert!(!skel::is_from_mesos(&plain));
    assert_eq!(skel::result_version_for(&plain), "1.0.0");
}
