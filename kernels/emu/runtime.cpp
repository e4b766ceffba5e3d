// Runtime of the CUDA-on-CPU emulator (see cuda_emu.h and README.md): fibers, the deterministic
// block scheduler, barriers and warp rendezvous with misuse detection, shared-memory arena.
#include "cuda_emu.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#if defined(__SANITIZE_THREAD__)
#define SPIRE_EMU_TSAN 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SPIRE_EMU_ASAN 1
#endif
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SPIRE_EMU_TSAN 1
#endif
#if __has_feature(address_sanitizer)
#define SPIRE_EMU_ASAN 1
#endif
#endif

#if SPIRE_EMU_TSAN
extern "C" {
void* __tsan_get_current_fiber(void);
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
void __tsan_set_fiber_name(void* fiber, const char* name);
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}
#define SPIRE_TSAN_NO_SYNC 1u
#endif
#if SPIRE_EMU_ASAN
extern "C" {
void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old, size_t* size_old);
void __asan_poison_memory_region(void const volatile* addr, size_t size);
void __asan_unpoison_memory_region(void const volatile* addr, size_t size);
}
#endif

#if !defined(__x86_64__) && !defined(SPIRE_EMU_UCONTEXT)
#define SPIRE_EMU_UCONTEXT 1
#endif
#if SPIRE_EMU_UCONTEXT
#include <ucontext.h>
#endif
// Direct switching: a fiber that blocks runs the scheduler's bookkeeping itself and switches
// straight to the next runnable fiber (one context switch per wait instead of two). Sanitizer
// builds switch through the scheduler instead, so that the bookkeeping runs on one TSAN fiber
// and ASAN sees only fiber <-> scheduler stack switches.
#if !SPIRE_EMU_UCONTEXT && !SPIRE_EMU_TSAN && !SPIRE_EMU_ASAN && !defined(SPIRE_EMU_NO_DIRECT_SWITCH)
#define SPIRE_EMU_DIRECT 1
#else
#define SPIRE_EMU_DIRECT 0
#endif

namespace spire_emu {
namespace detail {

Geometry g_geom;
ThreadIndex* g_cur;

namespace {

template <class T>
inline void wr(T& v, T x) {
    __atomic_store_n(&v, x, __ATOMIC_RELAXED);
}

// ---------------------------------------------------------------------------------------------
// Context switch.
#if !SPIRE_EMU_UCONTEXT
extern "C" void spire_emu_ctx_switch(void** save_sp, void* new_sp);
extern "C" void spire_emu_ctx_start();
// Saves the callee-saved registers on the current stack, stores the stack pointer to *save_sp,
// switches to new_sp and restores the registers saved there. A fresh fiber's stack is prepared
// so that the restore "returns" into spire_emu_ctx_start, which calls r13(r12) and never returns.
__asm__(
    ".text\n"
    ".p2align 4\n"
    ".globl spire_emu_ctx_switch\n"
    ".hidden spire_emu_ctx_switch\n"
    ".type spire_emu_ctx_switch,@function\n"
    "spire_emu_ctx_switch:\n"
    "    pushq %rbp\n"
    "    pushq %rbx\n"
    "    pushq %r12\n"
    "    pushq %r13\n"
    "    pushq %r14\n"
    "    pushq %r15\n"
    "    movq %rsp, (%rdi)\n"
    "    movq %rsi, %rsp\n"
    "    popq %r15\n"
    "    popq %r14\n"
    "    popq %r13\n"
    "    popq %r12\n"
    "    popq %rbx\n"
    "    popq %rbp\n"
    "    ret\n"
    ".size spire_emu_ctx_switch, .-spire_emu_ctx_switch\n"
    ".p2align 4\n"
    ".globl spire_emu_ctx_start\n"
    ".hidden spire_emu_ctx_start\n"
    ".type spire_emu_ctx_start,@function\n"
    "spire_emu_ctx_start:\n"
    "    movq %r12, %rdi\n"
    "    callq *%r13\n"
    "    ud2\n"
    ".size spire_emu_ctx_start, .-spire_emu_ctx_start\n");
#endif

enum State : int { S_IDLE = 0, S_RUNNABLE, S_BLOCK, S_WARP, S_EXITED };

struct Fiber {
    ThreadIndex idx;  // must stay first: g_cur points here
    unsigned int lin = 0;
    char* map = nullptr;  // mapping: guard page + stack
    size_t map_size = 0;
    char* stack_lo = nullptr;
    size_t stack_size = 0;
#if SPIRE_EMU_UCONTEXT
    ucontext_t uc;
#else
    void* sp = nullptr;
#endif
    bool started = false;  // ran but did not exit (its stack holds abandoned frames after an error)
    // Request (written by the fiber, read by the scheduler) and result (the other way round);
    // accessed with relaxed atomics only.
    int state = S_IDLE;
    int op = 0;
    unsigned int mask = 0;
    unsigned long long value = 0;
    int arg = 0;
    int width = 32;
    const char* file = nullptr;
    int line = 0;
    unsigned long long result = 0;
    unsigned int warp_arrivals = 0;    // __syncwarp arrivals of this thread in this block
    unsigned int partner_parity = 0;   // bit j: parity of lane j's arrival at the completed __syncwarp
    unsigned int bar_gen = 0;          // block barrier generation at arrival
#if SPIRE_EMU_TSAN
    void* tsan_fiber = nullptr;
#endif
#if SPIRE_EMU_ASAN
    void* asan_fake = nullptr;
#endif
};

// TSAN sync objects of one block, freshly allocated per block so that no clock leaks from one
// block to the next through them.
struct BlockSync {
    char start;
    char bar[2];
    char lane[1024][2];
};

constexpr size_t kMaxThreads = 1024;
constexpr unsigned long long kMaxDynamicShared = 232448;  // 227 KiB, the sm_90 opt-in maximum
constexpr size_t kStaticArena = 4u << 20;
constexpr size_t kDynamicArena = 256u << 10;
#if SPIRE_EMU_ASAN || SPIRE_EMU_TSAN
constexpr size_t kStackSize = 1u << 20;
#else
constexpr size_t kStackSize = 256u << 10;
#endif
#if SPIRE_EMU_ASAN
constexpr size_t kRedzone = 32;
#else
constexpr size_t kRedzone = 0;
#endif
#if SPIRE_EMU_TSAN
constexpr size_t kPoolSets = 2;  // even and odd blocks use different fibers (see README)
#else
constexpr size_t kPoolSets = 1;
#endif

std::mutex g_launch_mutex;
Fiber* g_pool[kPoolSets * kMaxThreads];  // process lifetime (a plain array: stays reachable for LeakSanitizer)

// Scheduler context.
#if SPIRE_EMU_UCONTEXT
ucontext_t g_sched_uc;
#else
void* g_sched_sp = nullptr;
#endif
#if SPIRE_EMU_TSAN
void* g_sched_tsan = nullptr;  // read by fibers (relaxed)
char g_launch_end;
#endif
#if SPIRE_EMU_ASAN
void* g_sched_fake = nullptr;
const void* g_sched_stack_bottom = nullptr;
size_t g_sched_stack_size = 0;
#endif

BodyFn g_body = nullptr;
void* g_ctx = nullptr;
#if SPIRE_EMU_TSAN
BlockSync* g_sync = nullptr;  // read by fibers (relaxed)
#endif
unsigned int g_bar_gen = 0;   // block barrier generation, read by fibers (relaxed)

// Shared memory arena: static __shared__ slots, then the dynamic region. Fixed addresses.
char* g_arena = nullptr;
size_t g_static_used = 0;
unsigned long long g_dyn_bytes = 0;

// ---------------------------------------------------------------------------------------------
// Messages.
std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

const char* op_name(int op) {
    switch (op) {
        case OP_SYNCTHREADS: return "__syncthreads";
        case OP_SYNCTHREADS_COUNT: return "__syncthreads_count";
        case OP_SYNCTHREADS_AND: return "__syncthreads_and";
        case OP_SYNCTHREADS_OR: return "__syncthreads_or";
        case OP_SYNCWARP: return "__syncwarp";
        case OP_SHFL: return "__shfl_sync";
        case OP_SHFL_UP: return "__shfl_up_sync";
        case OP_SHFL_DOWN: return "__shfl_down_sync";
        case OP_SHFL_XOR: return "__shfl_xor_sync";
        case OP_BALLOT: return "__ballot_sync";
        case OP_ANY: return "__any_sync";
        case OP_ALL: return "__all_sync";
        case OP_ACTIVEMASK: return "__activemask";
        default: return "?";
    }
}

// ---------------------------------------------------------------------------------------------
// Memory helpers that sanitizers do not see (the scheduler's poisoning is not a kernel access).
__attribute__((no_sanitize_address, no_sanitize_thread, no_sanitize_undefined)) void poison_bytes(void* p, size_t n) {
#if SPIRE_EMU_ASAN || SPIRE_EMU_TSAN
    volatile unsigned long long* q = static_cast<volatile unsigned long long*>(p);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        *q++ = ~0ull;
    }
    volatile unsigned char* c = reinterpret_cast<volatile unsigned char*>(q);
    for (; i < n; ++i) {
        *c++ = 0xff;
    }
#else
    std::memset(p, 0xff, n);
#endif
}

#if SPIRE_EMU_TSAN
// Replace [p, p + n) (page aligned) by fresh pages: ThreadSanitizer's mmap interceptor resets the
// shadow, so accesses of an earlier block to this memory are forgotten.
void tsan_fresh_pages(void* p, size_t n) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    n = (n + page - 1) / page * page;
    if (n == 0) {
        return;
    }
    void* r = mmap(p, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    if (r != p) {
        std::fprintf(stderr, "spire_emu: mmap(MAP_FIXED) failed\n");
        std::abort();
    }
}
#endif

bool ensure_arena() {
    if (g_arena != nullptr) {
        return true;
    }
    void* p = mmap(nullptr, kStaticArena + kDynamicArena, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
        return false;
    }
    g_arena = static_cast<char*>(p);
#if SPIRE_EMU_ASAN
    __asan_poison_memory_region(g_arena + kStaticArena, kDynamicArena);
#endif
    return true;
}

// ---------------------------------------------------------------------------------------------
// Fibers.
void fiber_entry(void* arg);

#if SPIRE_EMU_UCONTEXT
void fiber_entry_uc(unsigned int lo, unsigned int hi) {
    fiber_entry(reinterpret_cast<void*>(((uintptr_t)hi << 32) | lo));
}
#endif

Fiber* new_fiber(unsigned int lin) {
    Fiber* f = new Fiber();
    f->lin = lin;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    f->map_size = kStackSize + page;
    void* m = mmap(nullptr, f->map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (m == MAP_FAILED) {
        delete f;
        return nullptr;
    }
    f->map = static_cast<char*>(m);
    mprotect(f->map, page, PROT_NONE);  // guard page: a stack overflow faults instead of corrupting
    f->stack_lo = f->map + page;
    f->stack_size = kStackSize;
#if SPIRE_EMU_TSAN
    f->tsan_fiber = __tsan_create_fiber(0);
    char name[32];
    std::snprintf(name, sizeof name, "cuda thread %u", (unsigned int)(lin % kMaxThreads));
    __tsan_set_fiber_name(f->tsan_fiber, name);
#endif
    return f;
}

// Prepare f to start the kernel body from scratch on its next resume.
void reset_fiber(Fiber* f) {
#if SPIRE_EMU_ASAN
    if (f->started) {
        __asan_unpoison_memory_region(f->stack_lo, f->stack_size);  // abandoned frames' redzones
    }
#endif
#if SPIRE_EMU_TSAN
    if (f->started) {
        // Abandoned frames: start over with a new TSAN fiber on a fresh stack.
        __tsan_destroy_fiber(f->tsan_fiber);
        tsan_fresh_pages(f->stack_lo, f->stack_size);
        f->tsan_fiber = __tsan_create_fiber(0);
    }
#endif
    f->started = false;
#if SPIRE_EMU_UCONTEXT
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->stack_lo;
    f->uc.uc_stack.ss_size = f->stack_size;
    f->uc.uc_link = nullptr;
    const uintptr_t a = reinterpret_cast<uintptr_t>(f);
    makecontext(&f->uc, reinterpret_cast<void (*)()>(fiber_entry_uc), 2, (unsigned int)(a & 0xffffffffu),
                (unsigned int)(a >> 32));
#else
    // Stagger the stack tops (cache colouring): equal offsets modulo 4 KiB would make all fibers'
    // hot stack lines compete for the same L1 sets.
    const size_t colour = (size_t)(f->lin % 61u) * 64u + 256u;
    uintptr_t top = reinterpret_cast<uintptr_t>(f->stack_lo + f->stack_size - colour) & ~(uintptr_t)15;
    void** frame = reinterpret_cast<void**>(top - 24 - 6 * 8);
    frame[0] = nullptr;                                    // r15
    frame[1] = nullptr;                                    // r14
    frame[2] = reinterpret_cast<void*>(&fiber_entry);      // r13: function
    frame[3] = f;                                          // r12: argument
    frame[4] = nullptr;                                    // rbx
    frame[5] = nullptr;                                    // rbp (ends frame-pointer unwinding)
    frame[6] = reinterpret_cast<void*>(&spire_emu_ctx_start);  // return address
    f->sp = frame;
#endif
}

Fiber* current() { return reinterpret_cast<Fiber*>(rd(g_cur)); }

#if SPIRE_EMU_DIRECT
void yield_direct(Fiber* f);
#endif

// Fiber -> scheduler (or, with direct switching, -> the next runnable fiber).
void yield_to_scheduler(Fiber* f, bool final_switch) {
#if SPIRE_EMU_DIRECT
    (void)final_switch;
    yield_direct(f);
    return;
#endif
#if !SPIRE_EMU_UCONTEXT
    void* const to = g_sched_sp;
#endif
#if SPIRE_EMU_TSAN
    // Everything after this call is attributed to the scheduler's TSAN fiber: read what the switch
    // needs first.
    __tsan_switch_to_fiber(rd(g_sched_tsan), SPIRE_TSAN_NO_SYNC);
#endif
#if SPIRE_EMU_ASAN
    __sanitizer_start_switch_fiber(final_switch ? nullptr : &f->asan_fake, g_sched_stack_bottom, g_sched_stack_size);
#else
    (void)final_switch;
#endif
#if SPIRE_EMU_UCONTEXT
    swapcontext(&f->uc, &g_sched_uc);
#else
    spire_emu_ctx_switch(&f->sp, to);
#endif
#if SPIRE_EMU_ASAN
    __sanitizer_finish_switch_fiber(f->asan_fake, &g_sched_stack_bottom, &g_sched_stack_size);
#endif
}

// Scheduler -> fiber; returns when the fiber yields.
void resume(Fiber* f) {
    wr(g_cur, &f->idx);
    f->started = true;
#if !SPIRE_EMU_UCONTEXT
    void* const to = f->sp;
#endif
#if SPIRE_EMU_TSAN
    // Everything after this call is attributed to the fiber: read what the switch needs first.
    __tsan_switch_to_fiber(f->tsan_fiber, SPIRE_TSAN_NO_SYNC);
#endif
#if SPIRE_EMU_ASAN
    __sanitizer_start_switch_fiber(&g_sched_fake, f->stack_lo, f->stack_size);
#endif
#if SPIRE_EMU_UCONTEXT
    swapcontext(&g_sched_uc, &f->uc);
#else
    spire_emu_ctx_switch(&g_sched_sp, to);
#endif
#if SPIRE_EMU_ASAN
    __sanitizer_finish_switch_fiber(g_sched_fake, nullptr, nullptr);
#endif
    wr(g_cur, static_cast<ThreadIndex*>(nullptr));
}

void fiber_entry(void* arg) {
    Fiber* f = static_cast<Fiber*>(arg);
#if SPIRE_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &g_sched_stack_bottom, &g_sched_stack_size);
#endif
#if SPIRE_EMU_TSAN
    __tsan_acquire(&rd(g_sync)->start);  // the host's writes before the launch, the block's poisoning
#endif
    rd(g_body)(rd(g_ctx));
#if SPIRE_EMU_TSAN
    __tsan_release(&g_launch_end);  // everything this thread did happens before the launch returns
#endif
    wr(f->state, (int)S_EXITED);
    yield_to_scheduler(f, true);
    __builtin_trap();  // never resumed
}

// ---------------------------------------------------------------------------------------------
// The block scheduler.
// A warp rendezvous in progress: the lanes of `mask` that arrived so far, all at the same call
// site with the same mask (checked on arrival).
struct WarpGroup {
    unsigned int mask;
    unsigned int arrived;
    const Fiber* rep;  // the first lane that arrived
};

struct WarpState {
    unsigned int waiting = 0;  // lanes waiting at a warp intrinsic
    unsigned int exited = 0;   // lanes that returned, or do not exist (partial last warp)
    std::vector<WarpGroup> groups;
};

struct Block {
    unsigned int n = 0;
    Fiber** f = nullptr;
    std::vector<unsigned int> queue;  // ring buffer of runnable fibers
    size_t q_head = 0, q_len = 0;
    std::vector<WarpState> warps;
    unsigned int exited = 0;
    int first_exited = -1;
    unsigned int bar_arrived = 0;
    int bar_first = -1;
    unsigned int bar_count = 0;  // predicate count of __syncthreads_count/and/or
    unsigned int bar_gen = 0;
    std::string error;

    void push(unsigned int i) {
        size_t t = q_head + q_len;
        if (t >= queue.size()) {
            t -= queue.size();
        }
        queue[t] = i;
        ++q_len;
    }
    void push_front(unsigned int i) {
        q_head = q_head == 0 ? queue.size() - 1 : q_head - 1;
        queue[q_head] = i;
        ++q_len;
    }
    unsigned int pop() {
        const unsigned int i = queue[q_head];
        if (++q_head == queue.size()) {
            q_head = 0;
        }
        --q_len;
        return i;
    }
};

std::string thread_str(const Fiber* f) {
    return fmt("thread (%u,%u,%u)", rd(f->idx.tid[0]), rd(f->idx.tid[1]), rd(f->idx.tid[2]));
}
std::string block_str() {
    return fmt("block (%u,%u,%u)", g_geom.block_idx[0], g_geom.block_idx[1], g_geom.block_idx[2]);
}
std::string site_str(const Fiber* f) {
    const char* file = rd(f->file);
    return fmt("%s at %s:%d", op_name(rd(f->op)), file ? file : "?", rd(f->line));
}
std::string warp_site_str(const Fiber* f) {
    const char* file = rd(f->file);
    return fmt("%s(mask 0x%08x) at %s:%d", op_name(rd(f->op)), rd(f->mask), file ? file : "?", rd(f->line));
}
bool same_site(const Fiber* a, const Fiber* b) {
    if (rd(a->op) != rd(b->op) || rd(a->line) != rd(b->line)) {
        return false;
    }
    const char* fa = rd(a->file);
    const char* fb = rd(b->file);
    return fa == fb || (fa != nullptr && fb != nullptr && std::strcmp(fa, fb) == 0);
}
std::string lanes_str(unsigned int bits) {
    std::string s;
    int shown = 0;
    for (int j = 0; j < 32; ++j) {
        if ((bits >> j) & 1u) {
            if (shown == 8) {
                s += ",...";
                break;
            }
            s += fmt(shown ? ",%d" : "%d", j);
            ++shown;
        }
    }
    return s;
}

// The released lanes run next, in lane order, before any other runnable thread: a warp goes
// through a sequence of shuffles with only its own 32 fibers in the cache.
void release_warp_lanes(Block& b, unsigned int warp, unsigned int bits) {
    for (int j = 31; j >= 0; --j) {
        if ((bits >> j) & 1u) {
            Fiber* g = b.f[warp * 32 + j];
            wr(g->state, (int)S_RUNNABLE);
            b.push_front(warp * 32 + (unsigned int)j);
        }
    }
    b.warps[warp].waiting &= ~bits;
}

void on_exit(Block& b, Fiber* f) {
    ++b.exited;
    if (b.first_exited < 0) {
        b.first_exited = (int)f->lin;
    }
    const unsigned int warp = f->lin / 32, lane = f->lin % 32;
    WarpState& w = b.warps[warp];
    w.exited |= 1u << lane;
    if (b.bar_arrived > 0) {
        const Fiber* first = b.f[b.bar_first];
        b.error = fmt("%s of %s returned while %u threads wait at %s (first waiting: %s); a thread that exited never "
                      "arrives at a barrier",
                      thread_str(f).c_str(), block_str().c_str(), b.bar_arrived, site_str(first).c_str(),
                      thread_str(first).c_str());
        return;
    }
    for (const WarpGroup& gr : w.groups) {
        if ((gr.mask >> lane) & 1u) {
            const Fiber* g = gr.rep;
            b.error = fmt("%s (lane %u) of %s returned while %s (lane %u) waits for it in %s", thread_str(f).c_str(), lane,
                          block_str().c_str(), thread_str(g).c_str(), g->lin % 32, warp_site_str(g).c_str());
            return;
        }
    }
}

void on_block_barrier(Block& b, Fiber* f) {
    if (b.exited > 0) {
        const Fiber* x = b.f[b.first_exited];
        b.error = fmt("%s of %s returned while %u threads wait at %s (first waiting: %s); a thread that exited never "
                      "arrives at a barrier",
                      thread_str(x).c_str(), block_str().c_str(), b.bar_arrived + 1, site_str(f).c_str(),
                      thread_str(b.bar_arrived > 0 ? b.f[b.bar_first] : f).c_str());
        return;
    }
    if (b.bar_arrived > 0) {
        const Fiber* first = b.f[b.bar_first];
        if (!same_site(first, f)) {
            b.error = fmt("divergent barrier in %s: %s waits at %s but %s reached %s (%u threads wait at the first)",
                          block_str().c_str(), thread_str(first).c_str(), site_str(first).c_str(), thread_str(f).c_str(),
                          site_str(f).c_str(), b.bar_arrived);
            return;
        }
    } else {
        b.bar_first = (int)f->lin;
        b.bar_count = 0;
    }
    ++b.bar_arrived;
    b.bar_count += rd(f->arg) ? 1u : 0u;
    if (b.bar_arrived == b.n) {
        const int op = rd(f->op);
        unsigned long long r = 0;
        if (op == OP_SYNCTHREADS_COUNT) {
            r = b.bar_count;
        } else if (op == OP_SYNCTHREADS_AND) {
            r = b.bar_count == b.n ? 1 : 0;
        } else if (op == OP_SYNCTHREADS_OR) {
            r = b.bar_count > 0 ? 1 : 0;
        }
        for (unsigned int i = 0; i < b.n; ++i) {
            wr(b.f[i]->result, r);
            wr(b.f[i]->state, (int)S_RUNNABLE);
            b.push(i);
        }
        b.bar_arrived = 0;
        b.bar_first = -1;
        ++b.bar_gen;
        wr(g_bar_gen, b.bar_gen);
    }
}

bool valid_width(int w) { return w >= 1 && w <= 32 && (w & (w - 1)) == 0; }

// Source lane of a shuffle for `lane`, or -1 when the lane keeps its own value.
int shfl_source(int op, int lane, int arg, int width) {
    const int seg = lane & ~(width - 1);
    switch (op) {
        case OP_SHFL: return seg + (arg & (width - 1));
        case OP_SHFL_UP: return (lane - seg) - arg < 0 || arg < 0 ? -1 : lane - arg;
        case OP_SHFL_DOWN: return (lane - seg) + arg >= width || arg < 0 ? -1 : lane + arg;
        case OP_SHFL_XOR: {
            const int src = lane ^ (arg & 31);
            return src >= seg + width ? -1 : src;  // later groups are out of reach; earlier ones are fine
        }
        default: return -1;
    }
}

void complete_warp(Block& b, unsigned int warp, unsigned int mask) {
    Fiber* lanes[32] = {};
    for (int j = 0; j < 32; ++j) {
        if ((mask >> j) & 1u) {
            lanes[j] = b.f[warp * 32 + j];
        }
    }
    int first = __builtin_ctz(mask);
    const int op = rd(lanes[first]->op);
    unsigned long long ballot = 0;
    for (int j = 0; j < 32; ++j) {
        if (lanes[j] != nullptr && rd(lanes[j]->value) != 0) {
            ballot |= 1ull << j;
        }
    }
    unsigned int parity = 0;
    if (op == OP_SYNCWARP) {
        for (int j = 0; j < 32; ++j) {
            if (lanes[j] != nullptr) {
                parity |= (rd(lanes[j]->warp_arrivals) & 1u) << j;
            }
        }
    }
    for (int j = 0; j < 32; ++j) {
        Fiber* g = lanes[j];
        if (g == nullptr) {
            continue;
        }
        unsigned long long r = 0;
        switch (op) {
            case OP_SHFL:
            case OP_SHFL_UP:
            case OP_SHFL_DOWN:
            case OP_SHFL_XOR: {
                const int src = shfl_source(op, j, rd(g->arg), rd(g->width));
                if (src < 0) {
                    r = rd(g->value);
                } else if (!((mask >> src) & 1u)) {
                    b.error = fmt("%s (lane %d) of %s reads lane %d in %s, but lane %d is not in the mask (undefined in "
                                  "CUDA)",
                                  thread_str(g).c_str(), j, block_str().c_str(), src, warp_site_str(g).c_str(), src);
                    return;
                } else {
                    r = rd(lanes[src]->value);
                }
                break;
            }
            case OP_BALLOT: r = ballot; break;
            case OP_ANY: r = ballot != 0 ? 1 : 0; break;
            case OP_ALL: r = ballot == mask ? 1 : 0; break;
            case OP_SYNCWARP: wr(g->partner_parity, parity); break;
            default: break;
        }
        wr(g->result, r);
    }
    release_warp_lanes(b, warp, mask);
}

void on_warp(Block& b, Fiber* f) {
    const unsigned int warp = f->lin / 32, lane = f->lin % 32;
    WarpState& w = b.warps[warp];
    const int op = rd(f->op);
    if (op == OP_ACTIVEMASK) {
        w.waiting |= 1u << lane;  // resolved when the block cannot progress otherwise
        return;
    }
    const unsigned int mask = rd(f->mask);
    if (!((mask >> lane) & 1u)) {
        b.error = fmt("%s (lane %u) of %s called %s with a mask that does not include its own lane", thread_str(f).c_str(),
                      lane, block_str().c_str(), warp_site_str(f).c_str());
        return;
    }
    if (op >= OP_SHFL && op <= OP_SHFL_XOR && !valid_width(rd(f->width))) {
        b.error = fmt("%s (lane %u) of %s called %s with width %d (must be a power of two in [1, 32])", thread_str(f).c_str(),
                      lane, block_str().c_str(), warp_site_str(f).c_str(), rd(f->width));
        return;
    }
    WarpGroup* join = nullptr;
    for (WarpGroup& gr : w.groups) {
        if ((gr.mask & mask) == 0) {
            continue;  // a disjoint rendezvous of other lanes
        }
        const Fiber* g = gr.rep;
        if (gr.mask != mask || !same_site(f, g)) {
            b.error = fmt("lanes of warp %u of %s disagree at a warp rendezvous: %s (lane %u) called %s while %s (lane %u) "
                          "waits in %s",
                          warp, block_str().c_str(), thread_str(f).c_str(), lane, warp_site_str(f).c_str(),
                          thread_str(g).c_str(), g->lin % 32, warp_site_str(g).c_str());
            return;
        }
        join = &gr;
        break;
    }
    const unsigned int gone = mask & w.exited;
    if (gone != 0) {
        const int j = __builtin_ctz(gone);
        const unsigned int lin = warp * 32 + (unsigned int)j;
        b.error = fmt("%s (lane %u) of %s called %s, but lane %d named in the mask %s", thread_str(f).c_str(), lane,
                      block_str().c_str(), warp_site_str(f).c_str(), j,
                      lin < b.n ? (thread_str(b.f[lin]) + " has exited").c_str() : "does not exist (partial warp)");
        return;
    }
    w.waiting |= 1u << lane;
    if (join == nullptr) {
        w.groups.push_back(WarpGroup{mask, 0u, f});
        join = &w.groups.back();
    }
    join->arrived |= 1u << lane;
    if (join->arrived == mask) {
        w.groups.erase(w.groups.begin() + (join - w.groups.data()));
        complete_warp(b, warp, mask);
    }
}

// Resolve pending __activemask calls once nothing else can run: each gets the set of lanes of
// its warp waiting at the same __activemask call site. Returns whether any was resolved.
bool resolve_activemask(Block& b) {
    bool any = false;
    for (unsigned int warp = 0; warp < b.warps.size(); ++warp) {
        WarpState& w = b.warps[warp];
        unsigned int pending = 0;
        for (int j = 0; j < 32; ++j) {
            if (((w.waiting >> j) & 1u) && rd(b.f[warp * 32 + j]->op) == OP_ACTIVEMASK) {
                pending |= 1u << j;
            }
        }
        while (pending != 0) {
            const int j0 = __builtin_ctz(pending);
            const Fiber* g0 = b.f[warp * 32 + j0];
            unsigned int group = 0;
            for (int j = j0; j < 32; ++j) {
                if (((pending >> j) & 1u) && same_site(g0, b.f[warp * 32 + j])) {
                    group |= 1u << j;
                }
            }
            for (int j = 0; j < 32; ++j) {
                if ((group >> j) & 1u) {
                    wr(b.f[warp * 32 + j]->result, (unsigned long long)group);
                }
            }
            release_warp_lanes(b, warp, group);
            pending &= ~group;
            any = true;
        }
    }
    return any;
}

std::string deadlock_report(Block& b) {
    struct Group {
        const Fiber* first;
        unsigned int count;
        unsigned int missing;  // warp waits: lanes of the mask not waiting
    };
    std::vector<Group> groups;
    for (unsigned int i = 0; i < b.n; ++i) {
        const Fiber* g = b.f[i];
        const int st = rd(g->state);
        if (st != S_BLOCK && st != S_WARP) {
            continue;
        }
        bool found = false;
        for (Group& gr : groups) {
            if (same_site(gr.first, g) && (st == S_BLOCK || rd(gr.first->mask) == rd(g->mask))) {
                ++gr.count;
                found = true;
                break;
            }
        }
        if (!found) {
            unsigned int missing = 0;
            if (st == S_WARP) {
                missing = rd(g->mask) & ~b.warps[i / 32].waiting;
            }
            groups.push_back(Group{g, 1, missing});
        }
    }
    std::string s = fmt("deadlock in %s: no thread can proceed.", block_str().c_str());
    for (size_t k = 0; k < groups.size() && k < 8; ++k) {
        const Group& gr = groups[k];
        if (rd(gr.first->state) == S_BLOCK) {
            s += fmt(" %u threads wait at %s (first: %s);", gr.count, site_str(gr.first).c_str(),
                     thread_str(gr.first).c_str());
        } else {
            const unsigned int warp = gr.first->lin / 32;
            std::string where;
            if (gr.missing != 0) {
                const unsigned int lin = warp * 32 + (unsigned int)__builtin_ctz(gr.missing);
                const Fiber* m = b.f[lin];
                where = fmt(", waiting for lanes %s; lane %d (%s) is %s", lanes_str(gr.missing).c_str(),
                            __builtin_ctz(gr.missing), thread_str(m).c_str(),
                            rd(m->state) == S_BLOCK ? ("at " + site_str(m)).c_str() : "elsewhere");
            }
            s += fmt(" %u threads of warp %u wait at %s (first: %s%s);", gr.count, warp, warp_site_str(gr.first).c_str(),
                     thread_str(gr.first).c_str(), where.c_str());
        }
    }
    if (groups.size() > 8) {
        s += fmt(" ... and %zu more groups;", groups.size() - 8);
    }
    s += fmt(" %u threads exited.", b.exited);
    return s;
}

// Book the request of fiber f, which just blocked or exited.
void dispatch(Block& b, Fiber* f) {
    switch (rd(f->state)) {
        case S_EXITED:
            f->started = false;
            on_exit(b, f);
            break;
        case S_BLOCK: on_block_barrier(b, f); break;
        case S_WARP: on_warp(b, f); break;
        default: b.error = "spire_emu internal error: fiber yielded in an unknown state"; break;
    }
}

#if SPIRE_EMU_DIRECT
Block* g_block = nullptr;

void yield_direct(Fiber* f) {
    Block& b = *g_block;
    dispatch(b, f);
    if (b.error.empty() && b.q_len > 0) {
        Fiber* next = b.f[b.pop()];
        if (next == f) {
            return;  // released again and first in line: keep running
        }
        wr(g_cur, &next->idx);
        next->started = true;
        spire_emu_ctx_switch(&f->sp, next->sp);
        return;
    }
    spire_emu_ctx_switch(&f->sp, g_sched_sp);  // misuse, or nothing runnable: the scheduler decides
}
#endif

// Runs one block to completion; returns false with b.error set on misuse.
bool run_block(Block& b) {
    b.q_head = b.q_len = 0;
    for (unsigned int i = 0; i < b.n; ++i) {
        b.push(i);
    }
#if SPIRE_EMU_DIRECT
    g_block = &b;
#endif
    while (true) {
        while (b.q_len > 0) {
            Fiber* f = b.f[b.pop()];
            resume(f);  // direct switching: returns when nothing is runnable or on misuse
#if !SPIRE_EMU_DIRECT
            dispatch(b, f);
#endif
            if (!b.error.empty()) {
                return false;
            }
        }
        if (b.exited == b.n) {
            return true;
        }
        if (resolve_activemask(b)) {
            continue;
        }
        b.error = deadlock_report(b);
        return false;
    }
}

void write_error(const std::string& msg, char* err, size_t err_len) {
    if (err == nullptr || err_len == 0) {
        return;
    }
    const size_t n = msg.size() < err_len - 1 ? msg.size() : err_len - 1;
    std::memcpy(err, msg.data(), n);
    err[n] = '\0';
}

std::string check_geometry(const spire_emu_launch_t& cfg) {
    const unsigned int* g = cfg.grid;
    const unsigned int* k = cfg.block;
    if (g[0] == 0 || g[1] == 0 || g[2] == 0) {
        return fmt("invalid launch: grid (%u,%u,%u) has a zero dimension", g[0], g[1], g[2]);
    }
    if (k[0] == 0 || k[1] == 0 || k[2] == 0) {
        return fmt("invalid launch: block (%u,%u,%u) has a zero dimension", k[0], k[1], k[2]);
    }
    if (g[0] > 0x7fffffffu || g[1] > 65535u || g[2] > 65535u) {
        return fmt("invalid launch: grid (%u,%u,%u) exceeds the limits (2^31-1, 65535, 65535)", g[0], g[1], g[2]);
    }
    if (k[0] > 1024u || k[1] > 1024u || k[2] > 64u) {
        return fmt("invalid launch: block (%u,%u,%u) exceeds the per-dimension limits (1024, 1024, 64)", k[0], k[1], k[2]);
    }
    const unsigned long long threads = (unsigned long long)k[0] * k[1] * k[2];
    if (threads > kMaxThreads) {
        return fmt("invalid launch: block (%u,%u,%u) has %llu threads, more than 1024", k[0], k[1], k[2], threads);
    }
    if (cfg.shared_bytes > kMaxDynamicShared) {
        return fmt("invalid launch: %llu bytes of dynamic shared memory requested, more than the %llu a block can have",
                   cfg.shared_bytes, kMaxDynamicShared);
    }
    return std::string();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Fiber side of the barriers.
int block_barrier(int op, int pred, const char* file, int line) {
    Fiber* f = current();
    if (f == nullptr) {
        return pred;  // called outside a launch: nothing to wait for
    }
    wr(f->op, op);
    wr(f->arg, pred);
    wr(f->file, file);
    wr(f->line, line);
#if SPIRE_EMU_TSAN
    BlockSync* s = rd(g_sync);
    const unsigned int gen = rd(g_bar_gen);
    __tsan_release(&s->bar[gen & 1u]);
#endif
    wr(f->state, (int)S_BLOCK);
    yield_to_scheduler(f, false);
#if SPIRE_EMU_TSAN
    __tsan_acquire(&s->bar[gen & 1u]);
#endif
    return (int)rd(f->result);
}

unsigned long long warp_op(int op, unsigned int mask, unsigned long long value, int arg, int width, const char* file,
                           int line) {
    Fiber* f = current();
    if (f == nullptr) {
        return op == OP_ACTIVEMASK ? 1ull : value;
    }
    wr(f->op, op);
    wr(f->mask, mask);
    wr(f->value, value);
    wr(f->arg, arg);
    wr(f->width, width);
    wr(f->file, file);
    wr(f->line, line);
#if SPIRE_EMU_TSAN
    // Only __syncwarp orders memory; shuffles and votes do not (CUDA documents no ordering).
    BlockSync* s = rd(g_sync);
    if (op == OP_SYNCWARP) {
        __tsan_release(&s->lane[f->lin % kMaxThreads][rd(f->warp_arrivals) & 1u]);
    }
#endif
    wr(f->state, (int)S_WARP);
    yield_to_scheduler(f, false);
    if (op == OP_SYNCWARP) {
#if SPIRE_EMU_TSAN
        const unsigned int parity = rd(f->partner_parity);
        const unsigned int base = f->lin / 32 * 32;
        for (int j = 0; j < 32; ++j) {
            if ((mask >> j) & 1u) {
                __tsan_acquire(&s->lane[(base + (unsigned int)j) % kMaxThreads][(parity >> j) & 1u]);
            }
        }
#endif
        wr(f->warp_arrivals, rd(f->warp_arrivals) + 1u);
    }
    return rd(f->result);
}

void* shared_static(SharedSlot* slot) {
    void* p = __atomic_load_n(&slot->ptr, __ATOMIC_RELAXED);
    if (p != nullptr) {
        return p;
    }
    // First use (during a launch, under the launch mutex, or at static initialisation).
    if (!ensure_arena()) {
        std::fprintf(stderr, "spire_emu: cannot map the shared-memory arena\n");
        std::abort();
    }
    const size_t align = slot->align < 16 ? 16 : (size_t)slot->align;
    const size_t off = (rd(g_static_used) + align - 1) / align * align;
    if (off + slot->size + kRedzone > kStaticArena) {
        std::fprintf(stderr, "spire_emu: static __shared__ arena (%zu bytes) exhausted by %s (%s:%d)\n", kStaticArena,
                     slot->name, slot->file, slot->line);
        std::abort();
    }
    p = g_arena + off;
    poison_bytes(p, slot->size);
#if SPIRE_EMU_ASAN
    __asan_poison_memory_region(static_cast<char*>(p) + slot->size, kRedzone);
#endif
    wr(g_static_used, off + (size_t)slot->size + kRedzone);
    __atomic_store_n(&slot->ptr, p, __ATOMIC_RELAXED);
    return p;
}

int validate_launch(const spire_emu_launch_t& cfg, char* err, size_t err_len) {
    const std::string e = check_geometry(cfg);
    if (!e.empty()) {
        write_error(e, err, err_len);
        return 1;
    }
    return 0;
}

int run_grid(const spire_emu_launch_t& cfg, BodyFn body, void* ctx, char* err, size_t err_len) {
    std::lock_guard<std::mutex> lock(g_launch_mutex);
    if (validate_launch(cfg, err, err_len) != 0) {
        return 1;
    }
    if (!ensure_arena()) {
        write_error("spire_emu: cannot map the shared-memory arena", err, err_len);
        return 1;
    }
    const unsigned int n = cfg.block[0] * cfg.block[1] * cfg.block[2];
    for (size_t set = 0; set < kPoolSets; ++set) {
        for (unsigned int i = 0; i < n; ++i) {
            Fiber*& f = g_pool[set * kMaxThreads + i];
            if (f == nullptr) {
                f = new_fiber((unsigned int)(set * kMaxThreads + i));
                if (f == nullptr) {
                    write_error("spire_emu: cannot map fiber stacks", err, err_len);
                    return 1;
                }
            }
        }
    }
#if SPIRE_EMU_TSAN
    wr(g_sched_tsan, __tsan_get_current_fiber());
#endif
    wr(g_body, body);
    wr(g_ctx, ctx);
    for (int d = 0; d < 3; ++d) {
        wr(g_geom.block_dim[d], cfg.block[d]);
        wr(g_geom.grid_dim[d], cfg.grid[d]);
    }
    // Dynamic shared memory: addressable bytes [0, shared_bytes), the rest poisoned for ASAN.
    char* dyn = g_arena + kStaticArena;
    g_dyn_bytes = cfg.shared_bytes;
#if SPIRE_EMU_ASAN
    __asan_unpoison_memory_region(dyn, (size_t)cfg.shared_bytes);
    __asan_poison_memory_region(dyn + cfg.shared_bytes, kDynamicArena - (size_t)cfg.shared_bytes);
#endif

    Block b;
    b.n = n;
    b.queue.assign(n, 0);
    b.warps.assign((n + 31) / 32, WarpState());
    std::vector<Fiber*> fibers(n);
    bool ok = true;
    unsigned long long block_no = 0;
    for (unsigned int bz = 0; bz < cfg.grid[2] && ok; ++bz) {
        for (unsigned int by = 0; by < cfg.grid[1] && ok; ++by) {
            for (unsigned int bx = 0; bx < cfg.grid[0] && ok; ++bx, ++block_no) {
                wr(g_geom.block_idx[0], bx);
                wr(g_geom.block_idx[1], by);
                wr(g_geom.block_idx[2], bz);
                const size_t set = (size_t)(block_no % kPoolSets);
                for (unsigned int i = 0; i < n; ++i) {
                    Fiber* f = g_pool[set * kMaxThreads + i];
                    f->lin = i;
                    reset_fiber(f);
                    wr(f->idx.tid[0], i % cfg.block[0]);
                    wr(f->idx.tid[1], i / cfg.block[0] % cfg.block[1]);
                    wr(f->idx.tid[2], i / (cfg.block[0] * cfg.block[1]));
                    wr(f->state, (int)S_RUNNABLE);
                    wr(f->warp_arrivals, 0u);
                    fibers[i] = f;
                }
                b.f = fibers.data();
                for (unsigned int w = 0; w < b.warps.size(); ++w) {
                    b.warps[w].waiting = 0;
                    b.warps[w].groups.clear();
                    const unsigned int lanes = n - w * 32 < 32 ? n - w * 32 : 32;
                    b.warps[w].exited = lanes == 32 ? 0u : ~((1u << lanes) - 1u);
                }
                b.exited = 0;
                b.first_exited = -1;
                b.bar_arrived = 0;
                b.bar_first = -1;
                b.bar_gen = 0;
                wr(g_bar_gen, 0u);
                // Shared memory of the new block: every byte 0xFF.
#if SPIRE_EMU_TSAN
                tsan_fresh_pages(g_arena, rd(g_static_used));
                tsan_fresh_pages(dyn, (size_t)cfg.shared_bytes);
                BlockSync* sync = static_cast<BlockSync*>(std::calloc(1, sizeof(BlockSync)));
                wr(g_sync, sync);
#endif
                poison_bytes(g_arena, rd(g_static_used));
                poison_bytes(dyn, (size_t)cfg.shared_bytes);
#if SPIRE_EMU_TSAN
                __tsan_release(&sync->start);
#endif
                ok = run_block(b);
#if SPIRE_EMU_TSAN
                if (!ok) {
                    // The threads stuck in the aborted block never reach their final release:
                    // release on their behalf, so that what they did happens before the launch
                    // returns (the host reuses its stack and buffers).
                    for (unsigned int i = 0; i < n; ++i) {
                        if (rd(fibers[i]->state) != S_EXITED) {
                            __tsan_switch_to_fiber(fibers[i]->tsan_fiber, SPIRE_TSAN_NO_SYNC);
                            __tsan_release(&g_launch_end);
                            __tsan_switch_to_fiber(rd(g_sched_tsan), SPIRE_TSAN_NO_SYNC);
                        }
                    }
                }
                wr(g_sync, static_cast<BlockSync*>(nullptr));
                std::free(sync);
#endif
            }
        }
    }
#if SPIRE_EMU_TSAN
    __tsan_acquire(&g_launch_end);
#endif
    wr(g_body, static_cast<BodyFn>(nullptr));
    wr(g_ctx, static_cast<void*>(nullptr));
    if (!ok) {
        write_error(b.error, err, err_len);
        return 1;
    }
    if (err != nullptr && err_len > 0) {
        err[0] = '\0';
    }
    return 0;
}

}  // namespace detail

void* dynamic_shared() {
    if (!detail::ensure_arena()) {
        std::fprintf(stderr, "spire_emu: cannot map the shared-memory arena\n");
        std::abort();
    }
    return detail::g_arena + detail::kStaticArena;
}

}  // namespace spire_emu
