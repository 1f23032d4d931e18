from hostq.cli import main

main()
