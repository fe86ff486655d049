/* Fiber context switch for the CUDA emulator (x86-64 System V): saves the callee-saved
 * registers and the stack pointer of the running fiber, loads another's. The C++ side
 * (emu_sched.cpp) builds a new fiber's first frame so that `ret` lands in the trampoline. */
#if defined(__x86_64__)
    .text

/* void emu_fiber_switch(void **save_sp, void *new_sp) */
    .globl  emu_fiber_switch
    .type   emu_fiber_switch, @function
    .p2align 4
emu_fiber_switch:
    .cfi_startproc
    pushq   %rbp
    pushq   %rbx
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
    movq    %rsp, (%rdi)
    movq    %rsi, %rsp
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbx
    popq    %rbp
    ret
    .cfi_endproc
    .size   emu_fiber_switch, .-emu_fiber_switch

/* First code a fiber runs: r13(r12), which never returns. */
    .globl  emu_fiber_trampoline
    .type   emu_fiber_trampoline, @function
    .p2align 4
emu_fiber_trampoline:
    .cfi_startproc
    .cfi_undefined rip
    movq    %r12, %rdi
    callq   *%r13
    ud2
    .cfi_endproc
    .size   emu_fiber_trampoline, .-emu_fiber_trampoline
#endif

    .section .note.GNU-stack,"",@progbits
