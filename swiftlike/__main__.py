from swiftlike.cli import main

if __name__ == "__main__":  # not when a spawned child process (vLLM's engine core) imports it as __mp_main__
    main()
