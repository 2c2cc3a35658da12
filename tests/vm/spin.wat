;; Spins forever: a CPU-bound wasm task for the cpu.max check of tests/vm/guest-tests.sh.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $forever
      (br $forever))))
