// Rebuild the eBPF object when bpf-linker changes (a new LLVM changes the output).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    // aya-build passes `--cfg bpf_target_arch="..."`; declare it so that
    // arch-specific code (alloc.rs reads the stack pointer) passes check-cfg.
    println!(
        "cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\", \"arm\", \"riscv64\", \"powerpc64\", \"s390x\", \"mips\", \"mips64\", \"loongarch64\"))"
    );
}
