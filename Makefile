# Convenience wrappers around the two README commands.
.PHONY: run test clean
run:
	@bash scripts/run.sh
test:
	@bash scripts/test.sh
clean:
	rm -rf build build-test build-dev build*.configure.log
