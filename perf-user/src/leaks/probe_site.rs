//! Where in a function an entry-only uprobe costs least.
//!
//! When a uprobe's breakpoint is hit, the kernel must run the instruction it
//! replaced. A few kinds it emulates in the trap handler (on x86-64: `push`
//! of a register, relative `jmp`, `call` and conditional jumps); any other it
//! copies to a page of the process and single-steps there, which is a second
//! trap, and costly in a VM. Measured here (Linux 6.18 in KVM, glibc 2.36,
//! `malloc_loop`): a uprobe on malloc, whose first instruction is `push
//! %r12`, costs about 1 us per call; one on free, whose first instruction is
//! `test %rdi,%rdi`, about 20 us. So the probe on free (which has no return
//! probe, and so need not sit at the very entry) moves past a first
//! instruction that is known to change neither the arguments nor the stack,
//! when the next one is emulated: glibc's free is probed at its `je`.
//! Functions with a return probe stay at their entry, where the kernel finds
//! the return address.

/// `EM_X86_64`.
const EM_X86_64: u16 = 62;

/// How many bytes into a function, whose first bytes are `code`, to put an
/// entry-only probe: 0 unless the move is known to be safe and cheaper.
pub fn entry_skip(machine: u16, code: &[u8]) -> u64 {
    if machine != EM_X86_64 || emulated_x86(code) {
        return 0;
    }
    match harmless_x86(code) {
        Some(len) if emulated_x86(&code[len..]) => len as u64,
        _ => 0,
    }
}

/// Instructions the x86 uprobe code emulates without a single-step.
fn emulated_x86(code: &[u8]) -> bool {
    matches!(
        code,
        // push %rax..%rdi, push %r8..%r15
        [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..]
        // jcc rel8, jmp rel8, jmp rel32, call rel32, jcc rel32
        | [0x70..=0x7f, _, ..] | [0xeb, _, ..] | [0xe9, _, _, _, _, ..] | [0xe8, _, _, _, _, ..]
        | [0x0f, 0x80..=0x8f, _, _, _, _, ..]
    )
}

/// The length of a first instruction that only sets flags or does nothing:
/// the probe may go after it without the program seeing other arguments or
/// another stack.
fn harmless_x86(code: &[u8]) -> Option<usize> {
    match code {
        // endbr64
        [0xf3, 0x0f, 0x1e, 0xfa, ..] => Some(4),
        // test %rdi,%rdi
        [0x48, 0x85, 0xff, ..] => Some(3),
        // nop
        [0x90, ..] => Some(1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_free_is_probed_at_its_branch() {
        // glibc 2.36: test %rdi,%rdi; je ...; push %rbp
        let free = [0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0x00, 0x00, 0x00, 0x55];
        assert_eq!(entry_skip(EM_X86_64, &free), 3);
        // With CET: endbr64; push %rbp
        assert_eq!(entry_skip(EM_X86_64, &[0xf3, 0x0f, 0x1e, 0xfa, 0x55]), 4);
    }

    #[test]
    fn emulated_or_unknown_first_instructions_stay() {
        // push %r12: already emulated.
        assert_eq!(entry_skip(EM_X86_64, &[0x41, 0x54, 0x55]), 0);
        // test %rdi,%rdi then mov: nothing gained.
        assert_eq!(
            entry_skip(EM_X86_64, &[0x48, 0x85, 0xff, 0x48, 0x89, 0xe5]),
            0
        );
        // mov %rsi,%rax: not known to be harmless.
        assert_eq!(entry_skip(EM_X86_64, &[0x48, 0x89, 0xf0, 0x55]), 0);
        // Cut short, or another architecture.
        assert_eq!(entry_skip(EM_X86_64, &[0x48, 0x85, 0xff, 0x0f, 0x84]), 0);
        assert_eq!(entry_skip(183, &[0x48, 0x85, 0xff, 0x55]), 0);
        assert_eq!(entry_skip(EM_X86_64, &[]), 0);
    }
}
