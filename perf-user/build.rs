//! Builds the kernel programs (perf-ebpf) for the BPF target with aya-build,
//! so that `include_bytes_aligned!` can embed the object in the binary.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata failed")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "perf-ebpf")
        .ok_or_else(|| anyhow!("package perf-ebpf is not in the workspace"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("perf-ebpf manifest has no parent directory"))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default()).context(
        "building the eBPF programs failed; run `cargo xtask setup` \
         (needs nightly rust-src and bpf-linker)",
    )
}
