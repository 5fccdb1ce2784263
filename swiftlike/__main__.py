from swiftlike.cli import main

main()
