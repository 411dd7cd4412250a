//! `weave-mesos`'s image flags at the command line, without a cluster: what is printed,
//! and the usage errors given before any master is contacted (the master address here is a
//! closed port, so reaching it would fail differently).

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_weave-mesos");

/// `weave-mesos ARGS`: (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("timeout")
        .arg("20")
        .arg(EXE)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unsupported_image_options_fail_before_the_master_is_contacted() {
    let base = [
        "execute",
        "--master=127.0.0.1:1",
        "--timeout=1",
        "--name=t",
        "--command=true",
    ];
    for (extra, want) in [
        (
            "--appc_image=coreos.com/etcd",
            "weave-mesos: --appc_image=coreos.com/etcd: AppC images are not supported: use \
             --docker_image=NAME (the Mesos containerizer with --image_providers=docker)\n",
        ),
        (
            "--containerizer=docker",
            "weave-mesos: --containerizer=docker: the Docker containerizer is not supported: \
             weave attaches containers through the Mesos containerizer's network/cni isolator; \
             use --containerizer=mesos (the default) with --docker_image\n",
        ),
        (
            "--env=NAME=value",
            "weave-mesos: parse --env: not JSON (expected value at line 1 column 1); expected \
             {\"NAME\": \"value\", ...}\n",
        ),
    ] {
        let (rc, out, err) = cli(&[&base[..], &[extra]].concat());
        assert_eq!((rc, out.as_str(), err.as_str()), (1, "", want), "{extra}");
    }
    // An image task with a valid flag set gets as far as the (closed) master.
    let (rc, _, err) =
        cli(&[&base[..], &["--docker_image=alpine", "--env={\"A\":\"b\"}"]].concat());
    assert_eq!(rc, 1);
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("not supported"), "{err}");
}

#[test]
fn scenario_in_an_image_needs_a_master() {
    let (rc, out, err) = cli(&["scenario", "--docker_image", "alpine"]);
    assert_eq!(rc, 1, "{out}");
    assert_eq!(
        err,
        "weave-mesos: --docker_image needs --master: the local cluster runs tasks in plain \
         network namespaces, with no Mesos containerizer to provision an image\n"
    );
}

#[test]
fn agent_flags_with_images_print_every_image_flag() {
    let (rc, out, err) = cli(&[
        "agent-flags",
        "--images",
        "--format",
        "env",
        "--docker-registry",
        "/srv/images",
    ]);
    assert_eq!((rc, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "MESOS_ISOLATION=filesystem/linux,network/cni,docker/runtime\n\
         MESOS_LAUNCHER=linux\n\
         MESOS_NETWORK_CNI_CONFIG_DIR=/etc/cni/net.d\n\
         MESOS_NETWORK_CNI_PLUGINS_DIR=/opt/cni/bin\n\
         MESOS_IMAGE_PROVIDERS=docker\n\
         MESOS_IMAGE_PROVISIONER_BACKEND=copy\n\
         MESOS_DOCKER_REGISTRY=/srv/images\n\
         MESOS_DOCKER_STORE_DIR=/var/lib/mesos/store/docker\n"
    );
    // Without --images, none of them.
    let (_, out, _) = cli(&["agent-flags"]);
    assert!(!out.contains("image") && !out.contains("docker"), "{out}");
}
