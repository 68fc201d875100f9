# gen-docs.cmake — the man pages and the bash completion, generated from the built tool itself
# (`msrnn man [COMMAND]`, `msrnn completion bash`), so they come from the same option tables as
# every command's --help. Run by the build:
#   cmake -DMSRNN=build/msrnn -DOUT=build/doc -P tools/gen-docs.cmake
# writes OUT/man1/msrnn.1, OUT/man1/msrnn-COMMAND.1 for each command `msrnn --help` lists, and
# OUT/completions/msrnn.
if(NOT MSRNN OR NOT OUT)
  message(FATAL_ERROR "usage: cmake -DMSRNN=TOOL -DOUT=DIR -P gen-docs.cmake")
endif()
file(REMOVE_RECURSE ${OUT}/man1 ${OUT}/completions)
file(MAKE_DIRECTORY ${OUT}/man1 ${OUT}/completions)

function(run_to file)
  execute_process(COMMAND ${MSRNN} ${ARGN} OUTPUT_FILE ${file} ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "msrnn ${ARGN} failed (${rc}): ${err}")
  endif()
endfunction()

execute_process(COMMAND ${MSRNN} --help OUTPUT_VARIABLE help RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "msrnn --help failed (${rc})")
endif()
# the command list: the lines "  NAME   one-line summary" after "commands:"
string(REGEX REPLACE ".*commands:\n" "" list "${help}")
string(REGEX MATCHALL "\n  [a-z][a-z-]*" names "\n${list}")
run_to(${OUT}/man1/msrnn.1 man)
foreach(n ${names})
  string(STRIP "${n}" n)
  run_to(${OUT}/man1/msrnn-${n}.1 man ${n})
endforeach()
run_to(${OUT}/completions/msrnn completion bash)
