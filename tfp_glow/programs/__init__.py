"""The command-line programs: absl flags and `main()` only, the logic lives in
the library; bin/ launchers and console scripts call each module's `run()`."""
