#![no_std]
#![no_main]

mod alloc;
mod block;
mod block_btf;
mod cpu_sample;
mod hist;
mod kmem;
mod offcpu;
mod offcpu_btf;
mod record;
mod tcp;
mod tcp_btf;
mod unwind;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: bpf_get_stackid and the perf-event helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
