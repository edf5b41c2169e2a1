# cython: language_level=3
"""What this CPU runs, and which builds of the SIMD kernels this installation has.

Compiled once, for the compiler's default target (no ``-march``), so that it imports on any
CPU of the platform: ``_isa.py`` asks it before it imports a kernel build compiled for a newer
instruction set. ``setup.py`` passes the list of builds it compiled (``SF_KERNEL_BUILDS``), so
a stale module left over from an earlier build is never mistaken for part of this one.
"""

cdef extern from *:
    """
    #ifndef SF_KERNEL_BUILDS
    #define SF_KERNEL_BUILDS ""
    #endif

    /* The x86-64 psABI level (1 to 4) that this CPU *and its OS* support; 0 elsewhere.
     * __builtin_cpu_supports reads CPUID once per process (libgcc, or compiler-rt with
     * clang) and reports AVX, AVX2, FMA and the AVX-512 features only when XGETBV says the
     * OS saves the YMM / ZMM registers, so a CPU with AVX-512 under an OS or hypervisor that
     * does not enable it reports level 3, never 4. */
    static int sf_x86_64_level(void) {
    #if defined(__x86_64__) && defined(__GNUC__)
        __builtin_cpu_init();
    #if !defined(__clang__) && __GNUC__ >= 12
        /* the levels exactly as the compiler's -march=x86-64-vN define them */
        if (__builtin_cpu_supports("x86-64-v4")) return 4;
        if (__builtin_cpu_supports("x86-64-v3")) return 3;
        if (__builtin_cpu_supports("x86-64-v2")) return 2;
        return 1;
    #else
        /* older gcc, clang: the features that define the levels, as far as they can ask */
        int v2 = __builtin_cpu_supports("sse3") && __builtin_cpu_supports("ssse3")
                 && __builtin_cpu_supports("sse4.1") && __builtin_cpu_supports("sse4.2")
                 && __builtin_cpu_supports("popcnt");
        int v3 = v2 && __builtin_cpu_supports("avx") && __builtin_cpu_supports("avx2")
                 && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi")
                 && __builtin_cpu_supports("bmi2");
        int v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
                 && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq")
                 && __builtin_cpu_supports("avx512vl");
        return v4 ? 4 : v3 ? 3 : v2 ? 2 : 1;
    #endif
    #else
        return 0;
    #endif
    }
    """
    const char *SF_KERNEL_BUILDS
    int sf_x86_64_level()


def x86_64_level():
    """The x86-64 level (1 to 4, as in ``-march=x86-64-v4``) this CPU and OS run; 0 off x86-64."""
    return sf_x86_64_level()


def kernel_builds():
    """The builds of the SIMD kernels compiled with this module, e.g. ``("baseline", "avx2")``."""
    return tuple(SF_KERNEL_BUILDS.decode("ascii").split())
