/* placeholder until the tracer lands */
int main(void) { return 0; }
