from agentlite.cli import main

main()
