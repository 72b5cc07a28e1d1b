-- Fixed requests (headers from -H); only the report.
dofile("bench/wrk/report.lua")
