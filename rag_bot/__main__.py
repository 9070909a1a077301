from rag_bot.cli import main

main()
