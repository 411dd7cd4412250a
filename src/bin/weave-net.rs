//! The `weave-net` CNI plugin: attaches containers to the weave bridge.
fn main() {
    weave::plugin::init_logging();
    let plugin = weave::plugin::WeaveNet::from_env();
    // One write for the result (dispatch flushes), not one per line of pretty JSON.
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let code = weave::cni::dispatch(
        &|k| std::env::var(k).ok(),
        &mut std::io::stdin(),
        &mut stdout,
        &plugin,
    );
    std::process::exit(code);
}
