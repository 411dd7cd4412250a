//! The `weave-ipam` CNI IPAM plugin: addresses from the weave router.
fn main() {
    weave::plugin::init_logging();
    let plugin = weave::plugin::WeaveIpam::from_env();
    let code = weave::cni::dispatch(
        &|k| std::env::var(k).ok(),
        &mut std::io::stdin(),
        &mut std::io::stdout(),
        &plugin,
    );
    std::process::exit(code);
}
