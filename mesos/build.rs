//! Generates the Mesos v1 protobuf types from `../protos` with protox (pure Rust, so no
//! protoc is needed to build) and prost-build. The descriptor set is kept too: the JSON
//! mode of the operator client transcodes through it.
use prost::Message;
use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../protos");
    let files = [
        "mesos/v1/mesos.proto",
        "mesos/v1/master/master.proto",
        "mesos/v1/scheduler/scheduler.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root]).expect("compile protos/ with protox");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("mesos_descriptor.bin"), fds.encode_to_vec())
        .expect("write mesos_descriptor.bin");
    prost_build::Config::new()
        .btree_map(["."])
        .enable_type_names()
        .compile_fds(fds)
        .expect("generate Rust from protos/ with prost-build");
}
