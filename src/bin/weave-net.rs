//! The `weave-net` CNI plugin: attaches containers to the weave bridge.
fn main() {
    weave::plugin::init_logging();
    let plugin = weave::plugin::WeaveNet::from_env();
    let code = weave::cni::dispatch(
        &|k| std::env::var(k).ok(),
        &mut std::io::stdin(),
        &mut std::io::stdout(),
        &plugin,
    );
    std::process::exit(code);
}
